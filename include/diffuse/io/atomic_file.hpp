#pragma once
// Files written atomically: the bytes go to a temporary file beside the target, which is flushed,
// fsync'd and renamed over it, so a crash, a kill or a full disk leaves the previous file as it was
// and a reader never sees half a file. Checkpoints, metrics and sample files are all written so.

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#if defined(_WIN32)
#include <io.h>       // _commit, _fileno
#include <process.h>  // _getpid
#else
#include <fcntl.h>    // open (to fsync the directory)
#include <unistd.h>   // fsync, getpid
#endif

namespace diffuse {
namespace detail {

inline unsigned long current_process_id() {
#if defined(_WIN32)
    return static_cast<unsigned long>(_getpid());
#else
    return static_cast<unsigned long>(getpid());
#endif
}

/// A number no other temporary file of this process has had.
inline unsigned long next_temporary_number() {
    static std::atomic<unsigned long> counter{0};
    return counter.fetch_add(1);
}

[[noreturn]] inline void throw_system(int error, const char* where, const std::string& path, const std::string& what) {
    throw std::system_error(error, std::generic_category(), std::string(where) + ": \"" + path + "\": " + what);
}

}  // namespace detail

/// Writes `path` atomically: fill(write) writes the bytes, write(const void* data, std::size_t n) at a
/// time, into `<path>.tmp.<pid>.<n>` in the same directory, which is
/// flushed, fsync'd and renamed over `path`; the directory is fsync'd too, so the rename survives a
/// power cut. On any failure the temporary is removed and `path` is left as it was. A process killed
/// mid-write leaves its temporary behind (and `path` as it was).
template <class Fill>
void write_file_atomically(const std::string& path, Fill&& fill, const char* where = "diffuse::write_file_atomically") {
    const std::string temp =
        path + ".tmp." + std::to_string(detail::current_process_id()) + "." + std::to_string(detail::next_temporary_number());
    errno = 0;
    std::FILE* file = std::fopen(temp.c_str(), "wbx");  // x: never reuse a file someone else made
    if (file == nullptr) detail::throw_system(errno, where, path, "cannot create the temporary file \"" + temp + "\"");
    try {
        fill([&](const void* data, std::size_t n) {
            if (n > 0 && std::fwrite(data, 1, n, file) != n) {
                detail::throw_system(errno, where, path, "cannot write the temporary file \"" + temp + "\"");
            }
        });
        if (std::fflush(file) != 0) detail::throw_system(errno, where, path, "cannot write the temporary file \"" + temp + "\"");
#if defined(_WIN32)
        if (_commit(_fileno(file)) != 0) detail::throw_system(errno, where, path, "cannot flush \"" + temp + "\" to disk");
#else
        if (fsync(fileno(file)) != 0) detail::throw_system(errno, where, path, "cannot flush \"" + temp + "\" to disk");
#endif
        const int closed = std::fclose(file);
        file = nullptr;
        if (closed != 0) detail::throw_system(errno, where, path, "cannot close the temporary file \"" + temp + "\"");
        std::error_code error;
        std::filesystem::rename(temp, path, error);  // atomic replacement (POSIX rename, MoveFileEx)
        if (error) {
            throw std::system_error(error, std::string(where) + ": \"" + path + "\": cannot rename \"" + temp +
                                               "\" over it");
        }
    } catch (...) {
        if (file != nullptr) std::fclose(file);
        std::remove(temp.c_str());
        throw;
    }
#if !defined(_WIN32)
    // Best effort: the file is complete and in place; this only makes the rename itself durable.
    std::string directory = std::filesystem::path(path).parent_path().string();
    if (directory.empty()) directory = ".";
    const int fd = ::open(directory.c_str(), O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        ::close(fd);
    }
#endif
}


/// Writes `bytes` to `path` atomically, as above.
inline void write_string_atomically(const std::string& path, std::string_view bytes,
                                    const char* where = "diffuse::write_string_atomically") {
    write_file_atomically(path, [&](auto&& write) { write(bytes.data(), bytes.size()); }, where);
}

}  // namespace diffuse
