// diffuse/io/safetensors.hpp: the reference implementation's own byte-exact test vectors, round
// trips, every kind of malformed file the tests can make, and atomic writes.
#include <diffuse/core/random.hpp>
#include <diffuse/io/safetensors.hpp>

#include "../support/temp_dir.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <system_error>
#include <vector>

#if !defined(_WIN32)
#include <csignal>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

using Catch::Matchers::Contains;
using diffuse::Dtype;
using diffuse::Index;
using diffuse::SafeTensors;

namespace {

using Bytes = std::vector<std::uint8_t>;
namespace fs = std::filesystem;

using diffuse::testing_support::TempDir;

void write_bytes(const std::string& path, const Bytes& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    REQUIRE(out.good());
}

Bytes read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A file from a header as written (no padding added) and a buffer.
Bytes raw_file(const std::string& header, const Bytes& buffer, std::uint64_t claimed_length) {
    Bytes out;
    for (int b = 0; b < 8; ++b) out.push_back(static_cast<std::uint8_t>(claimed_length >> (8 * b)));
    out.insert(out.end(), header.begin(), header.end());
    out.insert(out.end(), buffer.begin(), buffer.end());
    return out;
}

Bytes raw_file(const std::string& header, const Bytes& buffer) { return raw_file(header, buffer, header.size()); }

// The reason parse_safetensors gives for `bytes`, which must be rejected.
std::string parse_rejection(const Bytes& bytes) {
    try {
        (void)diffuse::parse_safetensors(bytes, "bad.safetensors");
    } catch (const diffuse::invalid_argument& e) {
        return e.what();
    }
    FAIL("the file was accepted");
    return {};
}

Bytes floats_le(const std::vector<float>& values) {
    Bytes out;
    for (const float v : values) {
        std::uint32_t bits;
        std::memcpy(&bits, &v, 4);
        for (int b = 0; b < 4; ++b) out.push_back(static_cast<std::uint8_t>(bits >> (8 * b)));
    }
    return out;
}

}  // namespace

TEST_CASE("the writer produces the reference implementation's bytes for its own test tensors", "[io][safetensors]") {
    // safetensors/src/tensor.rs, test_serialization: "attn.0", F32 [1, 2, 3] holding 0 .. 5.
    const std::vector<float> values = {0, 1, 2, 3, 4, 5};
    SafeTensors file;
    file.add("attn.0", {1, 2, 3}, values.data());
    const std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
    REQUIRE(header.size() == 64);  // already a multiple of 8: no padding
    REQUIRE(diffuse::serialize_safetensors(file) == raw_file(header, floats_le(values)));

    // test_serialization_forced_alignement: "attn0", [1, 1, 2, 3], padded with 7 spaces to 72 bytes.
    SafeTensors aligned;
    aligned.add("attn0", {1, 1, 2, 3}, values.data());
    const std::string padded = R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})" + std::string(7, ' ');
    REQUIRE(padded.size() == 72);
    REQUIRE(diffuse::serialize_safetensors(aligned) == raw_file(padded, floats_le(values)));

    // test_empty: no tensors, then no tensors with metadata {"framework": "pt"}.
    REQUIRE(diffuse::serialize_safetensors(SafeTensors()) == raw_file("{}      ", {}));
    SafeTensors empty;
    empty.metadata()["framework"] = "pt";
    REQUIRE(diffuse::serialize_safetensors(empty) == raw_file(R"({"__metadata__":{"framework":"pt"}}     )", {}));
}

TEST_CASE("the reader accepts the reference implementation's documentation example", "[io][safetensors]") {
    // From the docs of SafeTensors::deserialize: I32 [2, 2] of zeros, header length '<' = 60.
    const std::string header = R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})";
    REQUIRE(header.size() == 60);
    const SafeTensors file = diffuse::parse_safetensors(raw_file(header, Bytes(16, 0)));
    REQUIRE(file.size() == 1);
    REQUIRE(file.at("test").dtype == Dtype::I32);
    REQUIRE(file.at("test").shape == std::vector<Index>{2, 2});
    REQUIRE(file.values<std::int32_t>("test") == std::vector<std::int32_t>(4, 0));
}

TEST_CASE("F32 F64 I64 and U8 tensors and the metadata survive a save and a load bit for bit", "[io][safetensors]") {
    TempDir dir("round_trip");
    const std::string path = dir.file("t.safetensors");

    diffuse::Generator gen(3);
    const auto weight = gen.randn<float, 4>({3, 2, 3, 3});  // [out, in, kh, kw]
    std::vector<float> special = {0.0f, -0.0f, std::numeric_limits<float>::infinity(),
                                  -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                                  std::numeric_limits<float>::denorm_min(), 1.0f / 3.0f};
    const std::vector<double> doubles = {1.0 / 3.0, -2.5e-300, 6.02214076e23};
    const std::vector<std::int64_t> ints = {std::numeric_limits<std::int64_t>::min(), -1, 0, 1,
                                            std::numeric_limits<std::int64_t>::max(), 42};
    const std::vector<std::uint8_t> bytes = {0, 1, 127, 128, 255};

    SafeTensors out;
    out.add("conv.weight", weight);
    out.add("special", {7}, special.data());
    out.add("doubles", {3}, doubles.data());
    out.add("ints", {2, 3}, ints.data());
    out.add("bytes", {5}, bytes.data());
    out.add_scalar<std::int64_t>("step", 1234567890123);
    out.add("empty", {0, 4}, static_cast<const float*>(nullptr));
    out.metadata()["format"] = "pt";
    out.metadata()["config"] = R"({"a": [1, 2], "name": "é ü \" \\"})";
    diffuse::save_safetensors(path, out);

    const SafeTensors in = diffuse::load_safetensors(path);
    REQUIRE(in.size() == 7);
    REQUIRE(in.metadata() == out.metadata());
    for (const auto& [name, tensor] : out.tensors()) {
        INFO(name);
        REQUIRE(in.at(name).dtype == tensor.dtype);
        REQUIRE(in.at(name).shape == tensor.shape);
        REQUIRE(in.at(name).bytes == tensor.bytes);  // NaN, -0 and infinities included
    }
    const auto back = in.tensor<float, 4>("conv.weight");
    for (Index i = 0; i < weight.size(); ++i) REQUIRE(back.data()[i] == weight.data()[i]);
    REQUIRE(in.values<double>("doubles") == doubles);
    REQUIRE(in.values<std::int64_t>("ints") == ints);
    REQUIRE(in.values<std::uint8_t>("bytes") == bytes);
    REQUIRE(in.scalar<std::int64_t>("step") == 1234567890123);
    REQUIRE(in.at("empty").bytes.empty());
    REQUIRE(in.at("empty").shape == std::vector<Index>{0, 4});
    const auto s = in.values<float>("special");
    REQUIRE(std::signbit(s[1]));
    REQUIRE(std::isnan(s[4]));
}

TEST_CASE("the writer puts the widest dtypes first so every tensor is aligned for its type", "[io][safetensors]") {
    const std::vector<std::uint8_t> u8 = {1, 2, 3};
    const std::vector<float> f32 = {1, 2, 3};
    const std::vector<double> f64 = {1, 2};
    const std::vector<std::int64_t> i64 = {7};
    SafeTensors file;
    file.add("a_bytes", {3}, u8.data());
    file.add("b_floats", {3}, f32.data());
    file.add("c_doubles", {2}, f64.data());
    file.add("d_long", {1}, i64.data());
    const Bytes bytes = diffuse::serialize_safetensors(file);
    TempDir dir("alignment");
    write_bytes(dir.file("a.safetensors"), bytes);
    const auto header = diffuse::read_safetensors_header(dir.file("a.safetensors"));
    REQUIRE(header.header_size % 8 == 0);
    REQUIRE(header.entries.size() == 4);
    // I64 before F64 before F32 before U8, the reference implementation's order
    REQUIRE(header.entries[0].name == "d_long");
    REQUIRE(header.entries[1].name == "c_doubles");
    REQUIRE(header.entries[2].name == "b_floats");
    REQUIRE(header.entries[3].name == "a_bytes");
    for (const auto& e : header.entries) {
        INFO(e.name);
        REQUIRE((8 + header.header_size + e.begin) % diffuse::dtype_size(e.dtype) == 0);
    }
    REQUIRE(header.buffer_size == 8 + 16 + 12 + 3);
}

TEST_CASE("a file shorter than its header length or truncated in its buffer is rejected as truncated", "[io][safetensors]") {
    const std::string header = R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})";
    const Bytes good = raw_file(header, floats_le({1, 2, 3, 4, 5, 6}));
    REQUIRE_NOTHROW(diffuse::parse_safetensors(good));

    SECTION("fewer than the 8 bytes of the header length") {
        const Bytes cut(good.begin(), good.begin() + 5);
        REQUIRE_THAT(parse_rejection(cut), Contains("truncated header") && Contains("5 bytes") &&
                                         Contains("bad.safetensors"));
    }
    SECTION("the header cut short") {
        const Bytes cut(good.begin(), good.begin() + 30);
        REQUIRE_THAT(parse_rejection(cut), Contains("truncated header") && Contains("only 22 after"));
    }
    SECTION("a header length larger than the file") {
        REQUIRE_THAT(parse_rejection(raw_file(header, floats_le({1, 2, 3, 4, 5, 6}), 1000)),
                     Contains("header length is 1000 bytes") && Contains("truncated header"));
    }
    SECTION("a header length beyond the reference implementation's limit") {
        REQUIRE_THAT(parse_rejection(raw_file(header, {}, 1ull << 40)), Contains("more than the 100000000 bytes"));
    }
    SECTION("the buffer cut short") {
        const Bytes cut(good.begin(), good.end() - 1);
        REQUIRE_THAT(parse_rejection(cut), Contains("tensor \"w\"") && Contains("data_offsets [0, 24]") &&
                                         Contains("23-byte buffer") && Contains("truncated"));
    }
}

TEST_CASE("a header that is not JSON or not an object of tensors is rejected with the reason", "[io][safetensors]") {
    REQUIRE_THAT(parse_rejection(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})", Bytes(4, 0))),
                 Contains("not valid JSON"));
    REQUIRE_THAT(parse_rejection(raw_file(R"({"w":{"dtype":"F32",,}})", {})), Contains("not valid JSON"));
    REQUIRE_THAT(parse_rejection(raw_file(std::string("{\"w\xff\":1}"), {})), Contains("not valid JSON"));
    REQUIRE_THAT(parse_rejection(raw_file(std::string("{}\0\0\0\0\0\0", 8), {})), Contains("not valid JSON"));
    REQUIRE_THAT(parse_rejection(raw_file("[1, 2]  ", {})), Contains("type array, expected an object"));
    REQUIRE_THAT(parse_rejection(raw_file(R"({"w": 3})", {})), Contains("tensor \"w\": its entry is of type number"));
    REQUIRE_THAT(parse_rejection(raw_file(R"({"__metadata__": {"step": 3}})", {})),
                 Contains("\"__metadata__\" entry \"step\" is of type number, expected a string"));
    REQUIRE_THAT(parse_rejection(raw_file(R"({"__metadata__": ["a"]})", {})), Contains("\"__metadata__\" is of type array"));
}

TEST_CASE("a tensor entry with a missing or unknown field or an unknown dtype is rejected naming the tensor", "[io][safetensors]") {
    REQUIRE_THAT(parse_rejection(raw_file(R"({"conv.weight":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}})", Bytes(4, 0))),
                 Contains("tensor \"conv.weight\": unknown dtype \"F31\""));
    REQUIRE_THAT(parse_rejection(raw_file(R"({"w":{"dtype":"F32","shape":[1]}})", {})),
                 Contains("tensor \"w\": no \"data_offsets\""));
    REQUIRE_THAT(parse_rejection(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"offsets":[0,4]}})",
                                    Bytes(4, 0))),
                 Contains("tensor \"w\": unknown key \"offsets\""));
    REQUIRE_THAT(parse_rejection(raw_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", Bytes(4, 0))),
                 Contains("tensor \"w\": shape [-1] has an entry that is not a size"));
    REQUIRE_THAT(parse_rejection(raw_file(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", Bytes(4, 0))),
                 Contains("not a size"));
    REQUIRE_THAT(parse_rejection(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", Bytes(4, 0))),
                 Contains("tensor \"w\": data_offsets [0], expected [begin, end]"));
    REQUIRE_THAT(parse_rejection(raw_file(R"({"w":{"dtype":32,"shape":[1],"data_offsets":[0,4]}})", Bytes(4, 0))),
                 Contains("dtype is of type number"));
}

TEST_CASE("offsets that disagree with the shape, leave the buffer, overlap or leave holes are rejected", "[io][safetensors]") {
    SECTION("shape times dtype size is not the span of the offsets") {
        REQUIRE_THAT(parse_rejection(raw_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", Bytes(8, 0))),
                     Contains("tensor \"w\": shape [3] of F32 needs 12 bytes, but its data_offsets [0, 8] span 8"));
    }
    SECTION("a shape whose size overflows 64 bits") {
        REQUIRE_THAT(parse_rejection(raw_file(
                         R"({"w":{"dtype":"F64","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", Bytes(8, 0))),
                     Contains("needs more than 2^64 bytes"));
    }
    SECTION("offsets beyond the buffer") {
        REQUIRE_THAT(parse_rejection(raw_file(R"({"w":{"dtype":"F32","shape":[100],"data_offsets":[0,400]}})", Bytes(8, 0))),
                     Contains("tensor \"w\": data_offsets [0, 400] run past the end of the 8-byte buffer"));
    }
    SECTION("offsets that end before they begin") {
        REQUIRE_THAT(parse_rejection(raw_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", Bytes(8, 0))),
                     Contains("data_offsets [8, 0] end before they begin"));
    }
    SECTION("two tensors sharing bytes") {
        REQUIRE_THAT(parse_rejection(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                        Bytes(12, 0))),
                     Contains("tensor \"b\": data_offsets [4, 12] overlap those of tensor \"a\", [0, 8]"));
    }
    SECTION("bytes that belong to no tensor between two tensors") {
        REQUIRE_THAT(parse_rejection(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                                        Bytes(20, 0))),
                     Contains("tensor \"b\": data_offsets [12, 20] leave a hole: bytes [8, 12)"));
    }
    SECTION("bytes after the last tensor") {
        REQUIRE_THAT(parse_rejection(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", Bytes(12, 0))),
                     Contains("cover 8 bytes of the 12-byte buffer") && Contains("4 trailing bytes"));
    }
}

TEST_CASE("a name listed twice in the header is rejected although JSON parsers keep the last one", "[io][safetensors]") {
    REQUIRE_THAT(parse_rejection(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                    R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                    Bytes(8, 0))),
                 Contains("duplicate tensor name \"a\""));
    REQUIRE_THAT(parse_rejection(raw_file(R"({"a":{"dtype":"F32","dtype":"F64","shape":[1],"data_offsets":[0,4]}})", Bytes(4, 0))),
                 Contains("key \"dtype\" appears twice in the header's entry \"a\""));
    REQUIRE_THAT(parse_rejection(raw_file(R"({"__metadata__":{},"__metadata__":{}})", {})),
                 Contains("two \"__metadata__\" entries"));
}

TEST_CASE("reading a missing file or a tensor of another dtype names the file and the tensor", "[io][safetensors]") {
    TempDir dir("access");
    REQUIRE_THROWS_WITH(diffuse::load_safetensors(dir.file("missing.safetensors")),
                        Contains("missing.safetensors") && Contains("cannot open the file"));
    const std::vector<double> values = {1, 2};
    SafeTensors file("mine.safetensors");
    file.add("d", {2}, values.data());
    REQUIRE_THROWS_WITH(file.values<float>("d"), Contains("mine.safetensors") &&
                                                     Contains("tensor \"d\" has dtype F64, expected F32"));
    REQUIRE_THROWS_WITH(file.at("e"), Contains("no tensor named \"e\""));
    REQUIRE_THROWS_WITH((file.tensor<double, 2>("d")), Contains("tensor \"d\" has shape [2], expected rank 2"));
    REQUIRE_THROWS_WITH(file.scalar<double>("d"), Contains("expected a scalar"));
    REQUIRE_THROWS_WITH(file.add("d", {2}, values.data()), Contains("tensor \"d\" is already there"));
    REQUIRE_THROWS_WITH(file.add("__metadata__", {2}, values.data()), Contains("not a tensor name"));
    std::vector<float> out(3);
    REQUIRE_THROWS_WITH(file.copy_to("d", out.data(), 3), Contains("dtype F64"));
}

TEST_CASE("a failed rename leaves the target as it was and no temporary file behind", "[io][safetensors]") {
    TempDir dir("rename");
    const std::string target = dir.file("checkpoint.safetensors");
    fs::create_directory(target);  // a directory: rename(file, directory) must fail
    write_bytes(dir.file("checkpoint.safetensors/inside"), {1, 2, 3});
    const std::vector<float> values = {1, 2, 3};
    SafeTensors file;
    file.add("w", {3}, values.data());
    REQUIRE_THROWS_AS(diffuse::save_safetensors(target, file), std::system_error);
    REQUIRE_THROWS_WITH(diffuse::save_safetensors(target, file), Contains("cannot rename"));
    REQUIRE(dir.entries() == std::vector<std::string>{"checkpoint.safetensors"});
    REQUIRE(read_bytes(dir.file("checkpoint.safetensors/inside")) == Bytes{1, 2, 3});

    REQUIRE_THROWS_WITH(diffuse::save_safetensors(dir.file("no/such/dir/x.safetensors"), file),
                        Contains("cannot create the temporary file"));
}

TEST_CASE("saving over a file replaces it whole and leaves no temporary file", "[io][safetensors]") {
    TempDir dir("replace");
    const std::string path = dir.file("c.safetensors");
    const std::vector<float> a = {1, 2, 3}, b = {4, 5, 6, 7};
    SafeTensors first, second;
    first.add("w", {3}, a.data());
    second.add("w", {4}, b.data());
    diffuse::save_safetensors(path, first);
    diffuse::save_safetensors(path, second);
    REQUIRE(dir.entries() == std::vector<std::string>{"c.safetensors"});
    REQUIRE(diffuse::load_safetensors(path).values<float>("w") == b);
}

#if !defined(_WIN32)
TEST_CASE("a write that fails midway leaves the previous file intact and no temporary file", "[io][safetensors]") {
    // The file-size limit makes write() fail with EFBIG part of the way through, as a full disk would.
    TempDir dir("midway");
    const std::string path = dir.file("c.safetensors");
    const std::vector<float> small = {1, 2, 3};
    SafeTensors previous;
    previous.add("w", {3}, small.data());
    diffuse::save_safetensors(path, previous);
    const Bytes before = read_bytes(path);

    const std::vector<float> big(1 << 16, 0.5f);  // 256 KiB, over the limit below
    SafeTensors next;
    next.add("w", {1 << 16}, big.data());
    rlimit old_limit{};
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
    const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = old_limit;
    limit.rlim_cur = 64 * 1024;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &limit) == 0);
    std::string message;
    try {
        diffuse::save_safetensors(path, next);
    } catch (const std::system_error& e) {
        message = e.what();
    }
    REQUIRE(setrlimit(RLIMIT_FSIZE, &old_limit) == 0);
    std::signal(SIGXFSZ, old_handler);

    REQUIRE_THAT(message, Contains("cannot write the temporary file") && Contains("c.safetensors"));
    REQUIRE(read_bytes(path) == before);
    REQUIRE(dir.entries() == std::vector<std::string>{"c.safetensors"});
}

TEST_CASE("a process killed while it writes leaves a whole file either old or new", "[io][safetensors]") {
    TempDir dir("killed");
    const std::string path = dir.file("c.safetensors");
    const std::vector<float> a(1 << 20, 1.0f), b(1 << 20, 2.0f);  // 4 MiB each
    SafeTensors first, second;
    first.add("w", {1 << 20}, a.data());
    second.add("w", {1 << 20}, b.data());
    diffuse::save_safetensors(path, first);

    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        for (int i = 0;; ++i) diffuse::save_safetensors(path, i % 2 == 0 ? second : first);
    }
    usleep(150 * 1000);
    REQUIRE(kill(child, SIGKILL) == 0);
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));

    const std::vector<float> w = diffuse::load_safetensors(path).values<float>("w");
    REQUIRE((w == a || w == b));
    for (const std::string& name : dir.entries()) {  // at most the killed writer's temporary
        if (name != "c.safetensors") REQUIRE(name.rfind("c.safetensors.tmp.", 0) == 0);
    }
}
#endif
