#pragma once
// A directory of its own under the system's temporary directory (named after the test and the
// process, so parallel test runs do not meet), removed with everything in it at the end.

#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#if !defined(_WIN32)
#include <unistd.h>
#endif

namespace diffuse::testing_support {

class TempDir {
  public:
    explicit TempDir(const std::string& name) {
#if defined(_WIN32)
        const std::string pid = "0";
#else
        const std::string pid = std::to_string(getpid());
#endif
        path_ = std::filesystem::temp_directory_path() / ("diffuse_test_" + pid + "_" + name);
        std::filesystem::remove_all(path_);
        std::filesystem::create_directories(path_);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    std::string file(const std::string& name) const { return (path_ / name).string(); }
    // Names of everything in the directory.
    std::vector<std::string> entries() const {
        std::vector<std::string> out;
        for (const auto& e : std::filesystem::directory_iterator(path_)) out.push_back(e.path().filename().string());
        return out;
    }

  private:
    std::filesystem::path path_;
};

}  // namespace diffuse::testing_support
