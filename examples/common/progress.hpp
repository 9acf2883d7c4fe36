#pragma once
// A progress bar on stderr for the example trainer: step, smoothed loss, images per second and time
// left. On a terminal it redraws one line in place (carriage return); otherwise (a log file, a pipe,
// CTest) it prints a plain line at most every `line_seconds`. Not part of the library.

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

namespace examples {

/// "1:05:03", "4:09" or "0:07" for a number of seconds (negative or not finite: "?").
inline std::string format_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0.0) return "?";
    const long s = std::lround(seconds);
    char buffer[32];
    if (s >= 3600) {
        std::snprintf(buffer, sizeof buffer, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    } else {
        std::snprintf(buffer, sizeof buffer, "%ld:%02ld", s / 60, s % 60);
    }
    return buffer;
}

class ProgressBar {
  public:
    /// `total_steps` > 0 when the run ends at a step count (the bar is then a fraction of steps);
    /// 0 when it ends at a wall-clock deadline (the fraction is of the time budget).
    explicit ProgressBar(double line_seconds = 10.0, std::FILE* stream = stderr)
        : stream_(stream), tty_(isatty(fileno(stream)) != 0), line_seconds_(line_seconds) {}

    bool is_terminal() const { return tty_; }

    /// Reports a step: `fraction` of the run done in [0, 1], `seconds_left` estimated.
    void update(long step, double smoothed_loss, double images_per_second, double fraction, double seconds_left,
                bool force = false) {
        const auto now = std::chrono::steady_clock::now();
        const double since = std::chrono::duration<double>(now - last_).count();
        if (tty_) {
            if (!force && printed_ && since < 0.2) return;  // no more than 5 redraws a second
            constexpr int width = 24;
            const int filled = static_cast<int>(std::clamp(fraction, 0.0, 1.0) * width + 0.5);
            std::string bar(static_cast<std::size_t>(filled), '#');
            bar.append(static_cast<std::size_t>(width - filled), '.');
            std::fprintf(stream_, "\r[%s] step %ld  loss %.4f  %.1f img/s  %s left\x1b[K", bar.c_str(), step,
                         smoothed_loss, images_per_second, format_duration(seconds_left).c_str());
        } else {
            if (!force && printed_ && since < line_seconds_) return;
            std::fprintf(stream_, "step %ld  loss %.4f  %.1f img/s  %3.0f%%  %s left\n", step, smoothed_loss,
                         images_per_second, 100.0 * std::clamp(fraction, 0.0, 1.0),
                         format_duration(seconds_left).c_str());
        }
        std::fflush(stream_);
        printed_ = true;
        last_ = now;
    }

    /// Ends the bar's line (on a terminal), so that the next message starts on its own.
    void finish() {
        if (tty_ && printed_) std::fputc('\n', stream_);
        std::fflush(stream_);
        printed_ = false;
    }

  private:
    std::FILE* stream_;
    bool tty_;
    double line_seconds_;
    bool printed_ = false;
    std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

}  // namespace examples
