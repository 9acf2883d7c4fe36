// diffuse/io/idx.hpp on small IDX files that each test writes itself, plain and gzip-compressed.
#include <diffuse/io/idx.hpp>

#include <catch2/catch.hpp>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#if defined(_WIN32)
#include <process.h>
#define DIFFUSE_TEST_PID _getpid()
#else
#include <unistd.h>
#define DIFFUSE_TEST_PID getpid()
#endif

namespace {

using Bytes = std::vector<std::uint8_t>;

void put_u32(Bytes& out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

// An IDX file: magic, big-endian sizes, then the payload.
Bytes idx_bytes(std::uint32_t magic, const std::vector<std::uint32_t>& sizes, const Bytes& payload) {
    Bytes out;
    put_u32(out, magic);
    for (const auto s : sizes) put_u32(out, s);
    out.insert(out.end(), payload.begin(), payload.end());
    return out;
}

// n bytes of a pattern that uses the whole range 0..255.
Bytes pattern(std::size_t n) {
    Bytes out(n);
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>((i * 37 + 11) % 256);
    return out;
}

// A file in the temporary directory, unique to this process and name, removed at the end of the test.
class TempFile {
  public:
    explicit TempFile(const std::string& name)
        : path_((std::filesystem::temp_directory_path() /
                 ("diffuse_idx_test_" + std::to_string(DIFFUSE_TEST_PID) + "_" + name))
                    .string()) {}
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    ~TempFile() {
        std::error_code ignored;
        std::filesystem::remove(path_, ignored);
    }
    const std::string& path() const { return path_; }

    void write_plain(const Bytes& bytes) const {
        std::ofstream out(path_, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        REQUIRE(out.good());
    }
    void write_gzip(const Bytes& bytes) const {
        gzFile file = gzopen(path_.c_str(), "wb9");
        REQUIRE(file != nullptr);
        REQUIRE(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())) ==
                static_cast<int>(bytes.size()));
        REQUIRE(gzclose(file) == Z_OK);
    }
    Bytes read_raw() const {
        std::ifstream in(path_, std::ios::binary);
        return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }

  private:
    std::string path_;
};

// The message of the diffuse::invalid_argument that fn throws (fails the test if it throws nothing).
template <class Fn>
std::string error_of(Fn fn) {
    try {
        fn();
    } catch (const diffuse::invalid_argument& e) {
        return e.what();
    }
    FAIL("expected diffuse::invalid_argument");
    return {};
}

constexpr std::uint32_t images_magic = 0x00000803, labels_magic = 0x00000801;

}  // namespace

TEST_CASE("read_idx_images reads a plain file's shape and pixels", "[io][idx]") {
    const Bytes pixels = pattern(3 * 4 * 5);
    TempFile file("plain_images");
    file.write_plain(idx_bytes(images_magic, {3, 4, 5}, pixels));
    const diffuse::IdxImages images = diffuse::read_idx_images(file.path());
    CHECK(images.count == 3);
    CHECK(images.rows == 4);
    CHECK(images.cols == 5);
    CHECK(images.pixels == pixels);
}

TEST_CASE("read_idx_images reads a gzip-compressed file", "[io][idx]") {
    const Bytes pixels = pattern(2 * 28 * 28);
    TempFile file("gzip_images.gz");
    file.write_gzip(idx_bytes(images_magic, {2, 28, 28}, pixels));
    REQUIRE(file.read_raw()[0] == 0x1f);  // really gzip on disk
    const diffuse::IdxImages images = diffuse::read_idx_images(file.path());
    CHECK(images.count == 2);
    CHECK(images.rows == 28);
    CHECK(images.cols == 28);
    CHECK(images.pixels == pixels);
}

TEST_CASE("read_idx_labels reads plain and gzip-compressed label files", "[io][idx]") {
    const Bytes labels = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
    TempFile plain("labels"), gzip("labels.gz");
    plain.write_plain(idx_bytes(labels_magic, {10}, labels));
    gzip.write_gzip(idx_bytes(labels_magic, {10}, labels));
    CHECK(diffuse::read_idx_labels(plain.path()) == labels);
    CHECK(diffuse::read_idx_labels(gzip.path()) == labels);
}

TEST_CASE("a file with fewer pixels than its header says is rejected as truncated", "[io][idx]") {
    Bytes bytes = idx_bytes(images_magic, {3, 4, 5}, pattern(3 * 4 * 5));
    bytes.pop_back();
    TempFile file("truncated_images");
    file.write_plain(bytes);
    const std::string message = error_of([&] { diffuse::read_idx_images(file.path()); });
    CHECK_THAT(message, Catch::Contains(file.path()) && Catch::Contains("truncated") &&
                            Catch::Contains("59 bytes") && Catch::Contains("expected 60"));
}

TEST_CASE("a file that ends inside its header is rejected", "[io][idx]") {
    const Bytes whole = idx_bytes(images_magic, {3, 4, 5}, {});
    TempFile file("short_header");
    for (std::size_t size = 0; size < whole.size(); ++size) {
        CAPTURE(size);
        file.write_plain(Bytes(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(size)));
        const std::string message = error_of([&] { diffuse::read_idx_images(file.path()); });
        CHECK_THAT(message, Catch::Contains(file.path()) && Catch::Contains("the file ends inside"));
    }
}

TEST_CASE("a gzip file cut short anywhere is rejected", "[io][idx]") {
    TempFile whole("whole.gz"), cut("cut.gz");
    whole.write_gzip(idx_bytes(labels_magic, {100}, pattern(100)));
    const Bytes compressed = whole.read_raw();
    REQUIRE(compressed.size() > 18);
    // Every cut from the last byte of the 8-byte CRC/length trailer back to the first byte of the
    // deflate data: some leave every label readable, and only the incomplete stream gives them away.
    for (std::size_t removed = 1; removed + 10 < compressed.size(); ++removed) {
        CAPTURE(removed);
        cut.write_plain(Bytes(compressed.begin(), compressed.end() - static_cast<std::ptrdiff_t>(removed)));
        const std::string message = error_of([&] { diffuse::read_idx_labels(cut.path()); });
        CHECK_THAT(message, Catch::Contains(cut.path()));
    }
}

TEST_CASE("a file whose magic number is not an unsigned-byte IDX header is rejected", "[io][idx]") {
    TempFile file("wrong_magic");
    SECTION("not IDX at all: the first two bytes are not zero") {
        file.write_plain(idx_bytes(0x12340803, {1, 2, 2}, pattern(4)));
        CHECK_THAT(error_of([&] { diffuse::read_idx_images(file.path()); }),
                   Catch::Contains(file.path()) && Catch::Contains("magic number 0x12340803") &&
                       Catch::Contains("not an IDX header") && Catch::Contains("expected 0x00000803"));
    }
    SECTION("IDX of 32-bit floats (type 0x0d)") {
        file.write_plain(idx_bytes(0x00000d03, {1, 2, 2}, pattern(16)));
        CHECK_THAT(error_of([&] { diffuse::read_idx_images(file.path()); }),
                   Catch::Contains("magic number 0x00000d03") && Catch::Contains("type code 0x0d") &&
                       Catch::Contains("expected 0x08"));
    }
}

TEST_CASE("a file with the wrong number of dimensions is rejected", "[io][idx]") {
    TempFile labels("labels_as_images"), images("images_as_labels"), two_d("two_d");
    labels.write_plain(idx_bytes(labels_magic, {4}, pattern(4)));
    images.write_plain(idx_bytes(images_magic, {1, 2, 2}, pattern(4)));
    two_d.write_plain(idx_bytes(0x00000802, {2, 2}, pattern(4)));
    CHECK_THAT(error_of([&] { diffuse::read_idx_images(labels.path()); }),
               Catch::Contains(labels.path()) && Catch::Contains("1 dimension,") &&
                   Catch::Contains("expected 3"));
    CHECK_THAT(error_of([&] { diffuse::read_idx_images(two_d.path()); }),
               Catch::Contains("2 dimensions") && Catch::Contains("expected 3"));
    CHECK_THAT(error_of([&] { diffuse::read_idx_labels(images.path()); }),
               Catch::Contains(images.path()) && Catch::Contains("3 dimensions") &&
                   Catch::Contains("expected 1"));
}

TEST_CASE("bytes after the payload are rejected, plain or inside the gzip stream", "[io][idx]") {
    Bytes bytes = idx_bytes(images_magic, {2, 3, 3}, pattern(18));
    bytes.push_back(0);
    bytes.push_back(42);
    TempFile plain("trailing"), gzip("trailing.gz");
    plain.write_plain(bytes);
    gzip.write_gzip(bytes);
    for (const TempFile* file : {&plain, &gzip}) {
        CAPTURE(file->path());
        CHECK_THAT(error_of([&] { diffuse::read_idx_images(file->path()); }),
                   Catch::Contains(file->path()) && Catch::Contains("2 trailing bytes") &&
                       Catch::Contains("after the 18 bytes"));
    }
}

TEST_CASE("a header whose shape cannot be held in memory is rejected before allocating", "[io][idx]") {
    TempFile file("huge");
    file.write_plain(idx_bytes(images_magic, {0xffffffffu, 0xffffffffu, 0xffffffffu}, pattern(8)));
    CHECK_THAT(error_of([&] { diffuse::read_idx_images(file.path()); }), Catch::Contains("too large"));
    // A claimed size that fits but is not there is reported as truncated, without allocating it all.
    file.write_plain(idx_bytes(images_magic, {0x7fffffffu, 1024, 1024}, pattern(8)));
    CHECK_THAT(error_of([&] { diffuse::read_idx_images(file.path()); }), Catch::Contains("truncated"));
}

TEST_CASE("a missing file is named, with the package to install when it is a packaged dataset", "[io][idx]") {
    const std::string packaged = "/usr/share/datasets/diffuse-test-missing/train-images-idx3-ubyte.gz";
    CHECK_THAT(error_of([&] { diffuse::read_idx_images(packaged); }),
               Catch::Contains(packaged) && Catch::Contains("cannot open") &&
                   Catch::Contains("apt-get install dataset-fashion-mnist"));
    TempFile elsewhere("never_written");
    const std::string message = error_of([&] { diffuse::read_idx_labels(elsewhere.path()); });
    CHECK_THAT(message, Catch::Contains(elsewhere.path()) && Catch::Contains("cannot open"));
    CHECK_THAT(message, !Catch::Contains("apt-get"));
}

TEST_CASE("images_to_tensor gives count x 1 x H x W with pixel p mapped to 2p/255 - 1", "[io][idx]") {
    diffuse::IdxImages images;
    images.count = 3;
    images.rows = 16;
    images.cols = 16;
    for (int i = 0; i < 3 * 256; ++i) images.pixels.push_back(static_cast<std::uint8_t>(i % 256));
    const diffuse::Tensor4<float> x = diffuse::images_to_tensor<float>(images, 1, 2);
    REQUIRE(x.dimension(0) == 2);
    REQUIRE(x.dimension(1) == 1);
    REQUIRE(x.dimension(2) == 16);
    REQUIRE(x.dimension(3) == 16);
    for (int n = 0; n < 2; ++n) {
        for (int h = 0; h < 16; ++h) {
            for (int w = 0; w < 16; ++w) {
                const int p = images.pixels[static_cast<std::size_t>((1 + n) * 256 + h * 16 + w)];
                const long double expected = 2.0L * p / 255.0L - 1.0L;
                CHECK(x(n, 0, h, w) == Approx(static_cast<double>(expected)).margin(1e-7));
            }
        }
    }
    CHECK(x(0, 0, 0, 0) == -1.0f);   // pixel 0
    CHECK(x(0, 0, 15, 15) == 1.0f);  // pixel 255
    const diffuse::Tensor4<double> xd = diffuse::images_to_tensor<double>(images, 0, 1);
    CHECK(xd(0, 0, 8, 0) == Approx(2.0 * 128 / 255 - 1).epsilon(1e-15));
}

TEST_CASE("images_to_tensor rejects a range of images outside the file", "[io][idx]") {
    diffuse::IdxImages images;
    images.count = 4;
    images.rows = 2;
    images.cols = 2;
    images.pixels = pattern(16);
    CHECK_THAT(error_of([&] { diffuse::images_to_tensor<float>(images, 4, 1); }),
               Catch::Contains("first = 4") && Catch::Contains("[0, 4)"));
    CHECK_THAT(error_of([&] { diffuse::images_to_tensor<float>(images, -1, 1); }), Catch::Contains("first = -1"));
    CHECK_THAT(error_of([&] { diffuse::images_to_tensor<float>(images, 2, 3); }), Catch::Contains("first = 2"));
    CHECK_THAT(error_of([&] { diffuse::images_to_tensor<float>(images, 0, 5); }), Catch::Contains("count = 5"));
    CHECK(diffuse::images_to_tensor<float>(images, 1, 3).dimension(0) == 3);
}
