#pragma once
// Progress on stderr for the example programs, whose stdout may go to a file: the trainer's bar (step,
// smoothed loss, images per second, time left) and the phases of sampling and evaluation (model
// evaluations done, images per second, time left). On a terminal a line is redrawn in place (carriage
// return) at most 5 times a second; otherwise (a log file, a pipe, CTest) a plain line is printed at
// most every `line_seconds`, so a log gets a line every few seconds, not one per step. Not part of
// the library.

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>

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

/// One line of progress: on a terminal a bar and the text, redrawn in place; in a log the percentage
/// and the text, a line at a time.
class StatusLine {
  public:
    explicit StatusLine(double line_seconds = 10.0, std::FILE* stream = stderr)
        : stream_(stream), tty_(isatty(fileno(stream)) != 0), line_seconds_(line_seconds) {}
    StatusLine(const StatusLine&) = delete;
    StatusLine& operator=(const StatusLine&) = delete;
    ~StatusLine() { finish(); }  // an exception's message then starts on a line of its own

    bool is_terminal() const { return tty_; }

    /// Shows `text` with `fraction` in [0, 1] of the work done, unless the last line (or the start)
    /// was less than 0.2 s ago on a terminal, `line_seconds` in a log; `force` shows it anyway.
    void show(double fraction, const std::string& text, bool force = false) {
        const auto now = std::chrono::steady_clock::now();
        const double since = std::chrono::duration<double>(now - last_).count();
        if (!force && since < (tty_ ? 0.2 : line_seconds_)) return;
        fraction = std::clamp(fraction, 0.0, 1.0);
        if (tty_) {
            constexpr int width = 24;
            const int filled = static_cast<int>(fraction * width + 0.5);
            std::string bar(static_cast<std::size_t>(filled), '#');
            bar.append(static_cast<std::size_t>(width - filled), '.');
            std::fprintf(stream_, "\r[%s] %s\x1b[K", bar.c_str(), text.c_str());
            drawn_ = true;
        } else {
            std::fprintf(stream_, "%3.0f%%  %s\n", 100.0 * fraction, text.c_str());
        }
        std::fflush(stream_);
        last_ = now;
    }

    /// Ends the line (on a terminal), so that the next message starts on its own.
    void finish() {
        if (drawn_) std::fputc('\n', stream_);
        std::fflush(stream_);
        drawn_ = false;
    }

    /// Replaces the line by `text`, on a line of its own in a log too.
    void conclude(const std::string& text) {
        std::fprintf(stream_, tty_ ? "\r%s\x1b[K\n" : "%s\n", text.c_str());
        std::fflush(stream_);
        drawn_ = false;
    }

  private:
    std::FILE* stream_;
    bool tty_;
    double line_seconds_;
    bool drawn_ = false;  // a line without its newline is on the terminal
    std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

/// The trainer's bar: step, smoothed loss, images per second and time left.
class ProgressBar {
  public:
    explicit ProgressBar(double line_seconds = 10.0, std::FILE* stream = stderr) : line_(line_seconds, stream) {}

    bool is_terminal() const { return line_.is_terminal(); }

    /// Reports a step: `fraction` of the run done in [0, 1] (of its steps, or of its time budget),
    /// `seconds_left` estimated.
    void update(long step, double smoothed_loss, double images_per_second, double fraction, double seconds_left,
                bool force = false) {
        char text[160];
        std::snprintf(text, sizeof text, "step %ld  loss %.4f  %.1f img/s  %s left", step, smoothed_loss,
                      images_per_second, format_duration(seconds_left).c_str());
        line_.show(fraction, text, force);
    }

    void finish() { line_.finish(); }

  private:
    StatusLine line_;
};

/// A phase of sampling or evaluation, "samples by class" or "bits/dim": `images` images, each through
/// `steps` model evaluations, in `evaluations` calls of the model in all (steps times the batches).
/// Each step() shows the evaluations done, the images per second (a batch part way counted by the
/// share of its steps done) and the time left; finish() leaves one line saying what the phase did and
/// how fast.
class Phase {
  public:
    Phase(std::string what, long images, long steps, long evaluations, double line_seconds = 10.0,
          std::FILE* stream = stderr)
        : line_(line_seconds, stream), what_(std::move(what)), images_(images), evaluations_(evaluations),
          work_(static_cast<double>(images) * static_cast<double>(steps)) {}

    /// One model evaluation of `count` of the images.
    void step(long count) {
        ++done_;
        work_done_ += static_cast<double>(count);
        const double seconds = elapsed();
        const double fraction = work_ > 0.0 ? std::min(1.0, work_done_ / work_) : 1.0;
        char text[256];
        std::snprintf(text, sizeof text, "%s  evaluation %ld/%ld  %ld images  %.1f img/s  %s left", what_.c_str(),
                      done_, evaluations_, images_, static_cast<double>(images_) * fraction / seconds,
                      format_duration(seconds * (1.0 - fraction) / fraction).c_str());
        line_.show(fraction, text);
    }

    /// "samples by class: 60 images, 40 model evaluations in 12.3 s, 4.9 img/s"
    void finish() {
        const double seconds = elapsed();
        char text[256];
        std::snprintf(text, sizeof text, "%s: %ld images, %ld model evaluations in %.1f s, %.1f img/s", what_.c_str(),
                      images_, done_, seconds, static_cast<double>(images_) / seconds);
        line_.conclude(text);
    }

  private:
    double elapsed() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

    StatusLine line_;
    std::string what_;
    long images_;
    long evaluations_;  // model calls in all
    double work_;       // image-evaluations in all: images x steps
    long done_ = 0;
    double work_done_ = 0.0;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace examples
