#pragma once
// safetensors files (Hugging Face's format, https://github.com/huggingface/safetensors), read and
// written exactly as its README and reference implementation define them:
//   8 bytes    N, the header's length, an unsigned little-endian 64-bit integer
//   N bytes    a UTF-8 JSON object: {"__metadata__": {string: string}   (optional),
//                                    "<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//   the rest   the byte buffer; [begin, end) of each tensor counts from its start. The tensors tile it:
//              no holes, no overlaps, nothing after the last one.
// Tensors are row-major and little-endian, so they map one to one onto PyTorch's and NumPy's layout.
//
// The writer does what the reference writer does: tensors ordered by dtype, widest first, then by
// name; compact JSON with "__metadata__" first and keys in the order dtype, shape, data_offsets; the
// header padded with spaces to a multiple of 8 bytes, so every tensor is aligned for its type. Files
// are written atomically: to a temporary file in the same directory, flushed and fsync'd, then
// renamed over the target, so a crash or a kill mid-write leaves the previous file as it was.
//
// The reader believes nothing: the header length against the file size and the reference reader's
// 100,000,000-byte limit, the JSON's syntax and UTF-8, duplicate keys at any depth, every field's
// type, every dtype, shape x dtype size against each tensor's offsets (without overflow), and the
// offsets tiling the buffer exactly. Anything else throws diffuse::invalid_argument naming the file,
// the tensor and what was wrong. Writing throws std::system_error when the operating system refuses.
//
// Needs nlohmann/json (Debian: nlohmann-json3-dev), so it is part of diffuse::io, not of the
// Eigen-only core:  find_package(diffuse CONFIG REQUIRED COMPONENTS io).

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/io/atomic_file.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace diffuse {

/// safetensors' element types, in the reference implementation's order (increasing alignment), which
/// is the order its writer sorts by.
enum class Dtype { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

/// "F32", as the header spells it.
inline const char* dtype_name(Dtype dtype) {
    switch (dtype) {
        case Dtype::BOOL: return "BOOL";
        case Dtype::U8: return "U8";
        case Dtype::I8: return "I8";
        case Dtype::F8_E5M2: return "F8_E5M2";
        case Dtype::F8_E4M3: return "F8_E4M3";
        case Dtype::I16: return "I16";
        case Dtype::U16: return "U16";
        case Dtype::F16: return "F16";
        case Dtype::BF16: return "BF16";
        case Dtype::I32: return "I32";
        case Dtype::U32: return "U32";
        case Dtype::F32: return "F32";
        case Dtype::F64: return "F64";
        case Dtype::I64: return "I64";
        case Dtype::U64: return "U64";
    }
    return "?";
}

/// Bytes per element.
inline std::size_t dtype_size(Dtype dtype) {
    switch (dtype) {
        case Dtype::BOOL: case Dtype::U8: case Dtype::I8: case Dtype::F8_E5M2: case Dtype::F8_E4M3: return 1;
        case Dtype::I16: case Dtype::U16: case Dtype::F16: case Dtype::BF16: return 2;
        case Dtype::I32: case Dtype::U32: case Dtype::F32: return 4;
        case Dtype::F64: case Dtype::I64: case Dtype::U64: return 8;
    }
    return 0;
}

/// The dtype a header names, or nothing for a name safetensors does not define.
inline std::optional<Dtype> dtype_from_name(const std::string& name) {
    for (int d = static_cast<int>(Dtype::BOOL); d <= static_cast<int>(Dtype::U64); ++d) {
        if (name == dtype_name(static_cast<Dtype>(d))) return static_cast<Dtype>(d);
    }
    return std::nullopt;
}

/// The dtype that stores a C++ type: float -> F32, double -> F64, std::int64_t -> I64, and so on.
template <class T>
constexpr Dtype dtype_of() {
    static_assert(std::is_arithmetic_v<T>, "safetensors stores arithmetic types");
    if constexpr (std::is_same_v<T, bool>) {
        return Dtype::BOOL;
    } else if constexpr (std::is_floating_point_v<T>) {
        static_assert(sizeof(T) == 4 || sizeof(T) == 8, "float (F32) or double (F64)");
        return sizeof(T) == 4 ? Dtype::F32 : Dtype::F64;
    } else if constexpr (std::is_signed_v<T>) {
        return sizeof(T) == 1 ? Dtype::I8 : sizeof(T) == 2 ? Dtype::I16 : sizeof(T) == 4 ? Dtype::I32 : Dtype::I64;
    } else {
        return sizeof(T) == 1 ? Dtype::U8 : sizeof(T) == 2 ? Dtype::U16 : sizeof(T) == 4 ? Dtype::U32 : Dtype::U64;
    }
}

/// One tensor as a file holds it: its dtype, shape and raw bytes (row-major, little-endian).
struct StoredTensor {
    Dtype dtype = Dtype::F32;
    std::vector<Index> shape;          // [] for a scalar
    std::vector<std::uint8_t> bytes;   // [numel * dtype_size(dtype)]

    Index numel() const {
        Index n = 1;
        for (const Index d : shape) n *= d;
        return n;
    }
};

namespace detail {

// The reference reader refuses larger headers (a JSON parser is not to be fed gigabytes).
constexpr std::uint64_t safetensors_max_header = 100000000;

constexpr bool host_is_little_endian() {
#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return false;
#else
    return true;  // x86, ARM and RISC-V as everyone runs them, and MSVC's targets
#endif
}

/// Copies n elements of `size` bytes, swapping each one's bytes on a big-endian host: the file is
/// little-endian whatever the machine.
inline void copy_little_endian(void* to, const void* from, std::size_t n, std::size_t size) {
    if (n == 0) return;  // memcpy from a null pointer is undefined even for 0 bytes
    if constexpr (host_is_little_endian()) {
        std::memcpy(to, from, n * size);
    } else {
        auto* out = static_cast<std::uint8_t*>(to);
        const auto* in = static_cast<const std::uint8_t*>(from);
        for (std::size_t i = 0; i < n; ++i) {
            for (std::size_t b = 0; b < size; ++b) out[i * size + b] = in[i * size + size - 1 - b];
        }
    }
}

inline std::string shape_text(const std::vector<Index>& shape) { return shape_string(shape); }

[[noreturn]] inline void throw_safetensors(const char* where, const std::string& source, const std::string& what) {
    throw invalid_argument(std::string(where) + ": " + (source.empty() ? std::string() : "\"" + source + "\": ") + what);
}

}  // namespace detail

/// The tensors of a safetensors file by name, and its "__metadata__" strings.
class SafeTensors {
  public:
    SafeTensors() = default;
    /// `source` names the file in error messages.
    explicit SafeTensors(std::string source) : source_(std::move(source)) {}

    const std::string& source() const { return source_; }
    std::map<std::string, std::string>& metadata() { return metadata_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    const std::map<std::string, StoredTensor>& tensors() const { return tensors_; }
    std::size_t size() const { return tensors_.size(); }
    bool contains(const std::string& name) const { return tensors_.count(name) > 0; }

    /// Adds a tensor; its bytes must be shape's product times the dtype's size.
    void add(const std::string& name, StoredTensor tensor) {
        constexpr const char* where = "diffuse::SafeTensors::add";
        if (name == "__metadata__") {
            detail::throw_safetensors(where, source_, "\"__metadata__\" is the header's metadata key, not a tensor name");
        }
        if (tensors_.count(name) > 0) detail::throw_safetensors(where, source_, "tensor \"" + name + "\" is already there");
        for (const Index d : tensor.shape) {
            if (d < 0) {
                detail::throw_safetensors(where, source_, "tensor \"" + name + "\": shape " +
                                                              detail::shape_text(tensor.shape) + " has a negative size");
            }
        }
        const std::size_t expected = static_cast<std::size_t>(tensor.numel()) * dtype_size(tensor.dtype);
        if (tensor.bytes.size() != expected) {
            detail::throw_safetensors(where, source_, "tensor \"" + name + "\": " + std::to_string(tensor.bytes.size()) +
                                                          " bytes, expected " + std::to_string(expected) + " for " +
                                                          dtype_name(tensor.dtype) + " " + detail::shape_text(tensor.shape));
        }
        tensors_.emplace(name, std::move(tensor));
    }

    /// Adds a tensor of T read from data[0 .. product(shape)).
    template <class T>
    void add(const std::string& name, std::vector<Index> shape, const T* data) {
        StoredTensor tensor{dtype_of<T>(), std::move(shape), {}};
        for (const Index d : tensor.shape) {
            if (d < 0) {
                detail::throw_safetensors("diffuse::SafeTensors::add", source_, "tensor \"" + name + "\": shape " +
                                                                                    detail::shape_text(tensor.shape) +
                                                                                    " has a negative size");
            }
        }
        const auto n = static_cast<std::size_t>(tensor.numel());
        tensor.bytes.resize(n * sizeof(T));
        detail::copy_little_endian(tensor.bytes.data(), data, n, sizeof(T));
        add(name, std::move(tensor));
    }

    /// Adds an Eigen tensor under its own (row-major) shape.
    template <class T, int Rank>
    void add(const std::string& name, const Tensor<T, Rank>& tensor) {
        const auto& d = tensor.dimensions();
        add(name, std::vector<Index>(d.begin(), d.end()), tensor.data());
    }

    /// Adds a scalar, a tensor of shape [].
    template <class T>
    void add_scalar(const std::string& name, T value) {
        add(name, std::vector<Index>{}, &value);
    }

    /// The tensor called `name`; throws naming the file if there is none.
    const StoredTensor& at(const std::string& name) const {
        const auto it = tensors_.find(name);
        if (it == tensors_.end()) {
            detail::throw_safetensors("diffuse::SafeTensors::at", source_, "no tensor named \"" + name + "\"");
        }
        return it->second;
    }

    /// Tensor `name` as values of T, checking that its dtype is T's.
    template <class T>
    std::vector<T> values(const std::string& name) const {
        const StoredTensor& tensor = checked<T>(name);
        std::vector<T> out(static_cast<std::size_t>(tensor.numel()));
        detail::copy_little_endian(out.data(), tensor.bytes.data(), out.size(), sizeof(T));
        return out;
    }

    /// Tensor `name` copied into out[0 .. n), checking its dtype is T's and that it has n elements.
    template <class T>
    void copy_to(const std::string& name, T* out, Index n) const {
        const StoredTensor& tensor = checked<T>(name);
        if (tensor.numel() != n) {
            detail::throw_safetensors("diffuse::SafeTensors::copy_to", source_,
                                      "tensor \"" + name + "\": " + std::to_string(tensor.numel()) + " elements (shape " +
                                          detail::shape_text(tensor.shape) + "), expected " + std::to_string(n));
        }
        detail::copy_little_endian(out, tensor.bytes.data(), static_cast<std::size_t>(n), sizeof(T));
    }

    /// Tensor `name` as an Eigen tensor of rank Rank, checking the dtype and the rank.
    template <class T, int Rank>
    Tensor<T, Rank> tensor(const std::string& name) const {
        const StoredTensor& stored = checked<T>(name);
        if (stored.shape.size() != static_cast<std::size_t>(Rank)) {
            detail::throw_safetensors("diffuse::SafeTensors::tensor", source_,
                                      "tensor \"" + name + "\" has shape " + detail::shape_text(stored.shape) +
                                          ", expected rank " + std::to_string(Rank));
        }
        std::array<Index, Rank> dims{};
        std::copy(stored.shape.begin(), stored.shape.end(), dims.begin());
        Tensor<T, Rank> out(dims);
        detail::copy_little_endian(out.data(), stored.bytes.data(), static_cast<std::size_t>(out.size()), sizeof(T));
        return out;
    }

    /// Scalar `name`, checking the dtype and the shape [].
    template <class T>
    T scalar(const std::string& name) const {
        const StoredTensor& tensor = checked<T>(name);
        if (!tensor.shape.empty()) {
            detail::throw_safetensors("diffuse::SafeTensors::scalar", source_,
                                      "tensor \"" + name + "\" has shape " + detail::shape_text(tensor.shape) +
                                          ", expected a scalar, shape []");
        }
        T value;
        detail::copy_little_endian(&value, tensor.bytes.data(), 1, sizeof(T));
        return value;
    }

  private:
    template <class T>
    const StoredTensor& checked(const std::string& name) const {
        const StoredTensor& tensor = at(name);
        if (tensor.dtype != dtype_of<T>()) {
            detail::throw_safetensors("diffuse::SafeTensors", source_,
                                      "tensor \"" + name + "\" has dtype " + dtype_name(tensor.dtype) + ", expected " +
                                          dtype_name(dtype_of<T>()));
        }
        return tensor;
    }

    std::string source_;
    std::map<std::string, std::string> metadata_;
    std::map<std::string, StoredTensor> tensors_;
};

/// A tensor's entry in a header: where its bytes lie in the buffer.
struct SafetensorsEntry {
    std::string name;
    Dtype dtype = Dtype::F32;
    std::vector<Index> shape;
    std::uint64_t begin = 0;  // byte offsets into the buffer, [begin, end)
    std::uint64_t end = 0;
};

/// A file's header, checked against the file's size: what is in it without reading the tensors.
struct SafetensorsHeader {
    std::vector<SafetensorsEntry> entries;  // by offset
    std::map<std::string, std::string> metadata;
    std::uint64_t header_size = 0;  // N, the JSON's length with its padding
    std::uint64_t buffer_size = 0;  // the bytes after it
};

namespace detail {

/// The bytes of a file or of memory, read at an offset; size() is known up front.
class SafetensorsSource {
  public:
    virtual ~SafetensorsSource() = default;
    virtual std::uint64_t size() const = 0;
    /// Reads n bytes at `offset` into out; false if they are not all there.
    virtual bool read(std::uint64_t offset, std::size_t n, void* out) = 0;
};

class MemorySource final : public SafetensorsSource {
  public:
    MemorySource(const std::uint8_t* data, std::size_t n) : data_(data), n_(n) {}
    std::uint64_t size() const override { return n_; }
    bool read(std::uint64_t offset, std::size_t n, void* out) override {
        if (offset > n_ || n > n_ - offset) return false;
        if (n > 0) std::memcpy(out, data_ + offset, n);
        return true;
    }

  private:
    const std::uint8_t* data_;
    std::size_t n_;
};

class FileSource final : public SafetensorsSource {
  public:
    FileSource(const char* where, const std::string& path) {
        errno = 0;
        in_.open(path, std::ios::binary);
        if (!in_) {
            const int error = errno;
            std::string what = "cannot open the file";
            if (error != 0) what += std::string(" (") + std::strerror(error) + ")";
            throw_safetensors(where, path, what);
        }
        in_.seekg(0, std::ios::end);
        const std::streamoff end = in_.tellg();
        if (end < 0) throw_safetensors(where, path, "cannot tell the file's size");
        size_ = static_cast<std::uint64_t>(end);
    }
    std::uint64_t size() const override { return size_; }
    bool read(std::uint64_t offset, std::size_t n, void* out) override {
        if (n == 0) return true;
        in_.clear();
        in_.seekg(static_cast<std::streamoff>(offset));
        in_.read(static_cast<char*>(out), static_cast<std::streamsize>(n));
        return static_cast<std::size_t>(in_.gcount()) == n;
    }

  private:
    std::ifstream in_;
    std::uint64_t size_ = 0;
};

inline std::string quote_name(const std::string& name) { return "\"" + name + "\""; }

/// A JSON value that must be an unsigned integer, as a uint64.
inline std::optional<std::uint64_t> json_unsigned(const nlohmann::json& value) {
    if (!value.is_number_unsigned()) return std::nullopt;
    return value.get<std::uint64_t>();
}

/// The header's JSON, parsed: refuses a NUL byte, invalid JSON, a key twice in one object and
/// anything but an object at the top.
inline nlohmann::json parse_header_json(const char* where, const std::string& source, const std::string& text) {
    using json = nlohmann::json;
    // nlohmann keeps the last of duplicate keys without a word; the callback sees each key, so a
    // stack of the keys seen in each open object finds them (the reference format forbids them).
    std::vector<std::set<std::string>> open;
    std::string top_key, duplicate;
    int duplicate_depth = 0;
    const auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
        if (event == json::parse_event_t::object_start) {
            open.emplace_back();
        } else if (event == json::parse_event_t::object_end) {
            if (!open.empty()) open.pop_back();
        } else if (event == json::parse_event_t::key) {
            const std::string key = parsed.get<std::string>();
            if (depth == 1) top_key = key;
            if (!open.empty() && !open.back().insert(key).second && duplicate.empty()) {
                duplicate = key;
                duplicate_depth = depth;
            }
        }
        return true;
    };
    // nlohmann stops at a NUL as at the end of the input, so padding of NULs, and anything after
    // one, would pass unread; JSON has no raw NUL anywhere (not even in strings).
    if (const auto nul = text.find('\0'); nul != std::string::npos) {
        throw_safetensors(where, source, "the header is not valid JSON: a NUL byte at offset " + std::to_string(nul) +
                                             " of " + std::to_string(text.size()) +
                                             " (safetensors pads the header with spaces)");
    }
    json header;
    try {
        header = json::parse(text, callback);
    } catch (const json::parse_error& e) {
        throw_safetensors(where, source, "the header is not valid JSON: " + std::string(e.what()));
    }
    if (!duplicate.empty()) {
        throw_safetensors(where, source,
                          duplicate_depth == 1
                              ? (duplicate == "__metadata__" ? std::string("the header has two \"__metadata__\" entries")
                                                             : "duplicate tensor name " + quote_name(duplicate) +
                                                                   ": the header lists it twice")
                              : "key " + quote_name(duplicate) + " appears twice in the header's entry " + quote_name(top_key));
    }
    if (!header.is_object()) {
        throw_safetensors(where, source, "the header is JSON of type " + std::string(header.type_name()) +
                                             ", expected an object of tensors");
    }
    return header;
}

/// The "__metadata__" object: strings only.
inline void parse_metadata(const char* where, const std::string& source, const nlohmann::json& info,
                           std::map<std::string, std::string>& metadata) {
    if (!info.is_object()) {
        throw_safetensors(where, source, "\"__metadata__\" is of type " + std::string(info.type_name()) +
                                             ", expected an object of strings");
    }
    for (const auto& [key, value] : info.items()) {
        if (!value.is_string()) {
            throw_safetensors(where, source, "\"__metadata__\" entry " + quote_name(key) + " is of type " +
                                                 value.type_name() + ", expected a string");
        }
        metadata.emplace(key, value.get<std::string>());
    }
}

/// One tensor's entry: its keys, dtype and shape, and data_offsets that span exactly its bytes inside
/// a buffer of buffer_size bytes.
inline SafetensorsEntry parse_entry(const char* where, const std::string& source, const std::string& name,
                                    const nlohmann::json& info, std::uint64_t buffer_size) {
    using json = nlohmann::json;
    const std::string tensor = "tensor " + quote_name(name) + ": ";
    if (!info.is_object()) {
        throw_safetensors(where, source, tensor + "its entry is of type " + std::string(info.type_name()) +
                                             ", expected an object with dtype, shape and data_offsets");
    }
    for (const auto& [key, value] : info.items()) {
        (void)value;
        if (key != "dtype" && key != "shape" && key != "data_offsets") {
            throw_safetensors(where, source, tensor + "unknown key " + quote_name(key) +
                                                 ", expected only dtype, shape and data_offsets");
        }
    }
    for (const char* key : {"dtype", "shape", "data_offsets"}) {
        if (!info.contains(key)) throw_safetensors(where, source, tensor + "no \"" + key + "\"");
    }
    SafetensorsEntry entry;
    entry.name = name;
    const json& dtype = info.at("dtype");
    if (!dtype.is_string()) {
        throw_safetensors(where, source, tensor + "dtype is of type " + std::string(dtype.type_name()) +
                                             ", expected a string such as \"F32\"");
    }
    const auto known = dtype_from_name(dtype.get<std::string>());
    if (!known) {
        throw_safetensors(where, source, tensor + "unknown dtype " + quote_name(dtype.get<std::string>()) +
                                             ", expected one of BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, "
                                             "BF16, I32, U32, F32, F64, I64, U64");
    }
    entry.dtype = *known;

    const json& shape = info.at("shape");
    if (!shape.is_array()) {
        throw_safetensors(where, source, tensor + "shape is of type " + std::string(shape.type_name()) +
                                             ", expected an array of sizes");
    }
    // numel * dtype size, refusing anything that overflows 64 bits on the way
    std::uint64_t bytes = dtype_size(entry.dtype);
    bool overflow = false;
    for (const json& d : shape) {
        const auto size = json_unsigned(d);
        if (!size || *size > static_cast<std::uint64_t>(std::numeric_limits<Index>::max())) {
            throw_safetensors(where, source, tensor + "shape " + shape.dump() +
                                                 " has an entry that is not a size (a non-negative integer)");
        }
        entry.shape.push_back(static_cast<Index>(*size));
        if (*size != 0 && bytes > std::numeric_limits<std::uint64_t>::max() / *size) overflow = true;
        bytes = overflow ? 0 : bytes * *size;
    }

    const json& offsets = info.at("data_offsets");
    const auto begin = offsets.is_array() && offsets.size() == 2 ? json_unsigned(offsets[0]) : std::nullopt;
    const auto end = offsets.is_array() && offsets.size() == 2 ? json_unsigned(offsets[1]) : std::nullopt;
    if (!begin || !end) {
        throw_safetensors(where, source, tensor + "data_offsets " + offsets.dump() +
                                             ", expected [begin, end], two non-negative integers");
    }
    entry.begin = *begin;
    entry.end = *end;
    const std::string where_it_is = "data_offsets [" + std::to_string(entry.begin) + ", " +
                                    std::to_string(entry.end) + "]";
    if (entry.end < entry.begin) throw_safetensors(where, source, tensor + where_it_is + " end before they begin");
    if (overflow || bytes != entry.end - entry.begin) {
        throw_safetensors(where, source,
                          tensor + "shape " + shape_text(entry.shape) + " of " + dtype_name(entry.dtype) +
                              (overflow ? std::string(" needs more than 2^64 bytes")
                                        : " needs " + std::to_string(bytes) + " bytes") +
                              ", but its " + where_it_is + " span " + std::to_string(entry.end - entry.begin));
    }
    if (entry.end > buffer_size) {
        throw_safetensors(where, source,
                          tensor + where_it_is + " run past the end of the " + std::to_string(buffer_size) +
                              "-byte buffer after the header (is the file truncated?)");
    }
    return entry;
}

/// Sorts the entries by offset and checks that they tile the buffer: each starts where the one
/// before ends, and the last ends at buffer_size.
inline void check_tiling(const char* where, const std::string& source, std::vector<SafetensorsEntry>& entries,
                         std::uint64_t buffer_size) {
    // The tensors must tile the buffer: sorted by offset, each starts where the one before ends.
    std::sort(entries.begin(), entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    std::uint64_t at = 0;
    for (std::size_t i = 0; i < entries.size(); ++i) {
        const SafetensorsEntry& e = entries[i];
        const std::string range = "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
        if (e.begin < at) {
            const SafetensorsEntry& before = entries[i - 1];
            throw_safetensors(where, source, "tensor " + quote_name(e.name) + ": data_offsets " + range +
                                                 " overlap those of tensor " + quote_name(before.name) + ", [" +
                                                 std::to_string(before.begin) + ", " + std::to_string(before.end) + "]");
        }
        if (e.begin > at) {
            throw_safetensors(where, source, "tensor " + quote_name(e.name) + ": data_offsets " + range +
                                                 " leave a hole: bytes [" + std::to_string(at) + ", " +
                                                 std::to_string(e.begin) + ") of the buffer belong to no tensor");
        }
        at = e.end;
    }
    if (at != buffer_size) {
        throw_safetensors(where, source, "the tensors cover " + std::to_string(at) + " bytes of the " +
                                             std::to_string(buffer_size) + "-byte buffer after the header: " +
                                             std::to_string(buffer_size - at) + " trailing bytes belong to no tensor");
    }
}

/// Parses and checks the JSON header `text` of a file whose buffer has buffer_size bytes.
inline SafetensorsHeader parse_safetensors_header(const char* where, const std::string& source,
                                                  const std::string& text, std::uint64_t buffer_size) {
    const nlohmann::json header = parse_header_json(where, source, text);
    SafetensorsHeader out;
    out.buffer_size = buffer_size;
    for (const auto& [name, info] : header.items()) {
        if (name == "__metadata__") {
            parse_metadata(where, source, info, out.metadata);
        } else {
            out.entries.push_back(parse_entry(where, source, name, info, buffer_size));
        }
    }
    check_tiling(where, source, out.entries, buffer_size);
    return out;
}

/// Reads and checks the length prefix and the header of `in`.
inline SafetensorsHeader read_header(const char* where, const std::string& source, SafetensorsSource& in) {
    const std::uint64_t file_size = in.size();
    std::array<std::uint8_t, 8> prefix{};
    if (file_size < 8 || !in.read(0, 8, prefix.data())) {
        throw_safetensors(where, source, "truncated header: the file is " + std::to_string(file_size) +
                                             " bytes, too short for the 8-byte header length");
    }
    std::uint64_t n = 0;
    for (int b = 7; b >= 0; --b) n = (n << 8) | prefix[static_cast<std::size_t>(b)];
    if (n > safetensors_max_header) {
        throw_safetensors(where, source, "header length " + std::to_string(n) + " is more than the " +
                                             std::to_string(safetensors_max_header) +
                                             " bytes safetensors allows (a corrupt file?)");
    }
    if (n > file_size - 8) {
        throw_safetensors(where, source, "truncated header: the header length is " + std::to_string(n) +
                                             " bytes, but the file has only " + std::to_string(file_size - 8) +
                                             " after the 8-byte length");
    }
    std::string text(static_cast<std::size_t>(n), '\0');
    if (!in.read(8, text.size(), text.data())) throw_safetensors(where, source, "cannot read the header");
    SafetensorsHeader header = parse_safetensors_header(where, source, text, file_size - 8 - n);
    header.header_size = n;
    return header;
}

inline SafeTensors read_all(const char* where, const std::string& source, SafetensorsSource& in) {
    const SafetensorsHeader header = read_header(where, source, in);
    SafeTensors out(source);
    out.metadata() = header.metadata;
    for (const SafetensorsEntry& e : header.entries) {
        StoredTensor tensor{e.dtype, e.shape, std::vector<std::uint8_t>(static_cast<std::size_t>(e.end - e.begin))};
        if (!in.read(8 + header.header_size + e.begin, tensor.bytes.size(), tensor.bytes.data())) {
            throw_safetensors(where, source, "tensor " + quote_name(e.name) + ": cannot read its " +
                                                 std::to_string(tensor.bytes.size()) + " bytes (truncated?)");
        }
        out.add(e.name, std::move(tensor));
    }
    return out;
}

/// The header bytes (JSON, space-padded to a multiple of 8) and the order the tensors follow it in.
struct PreparedSafetensors {
    std::string header;
    std::vector<const std::pair<const std::string, StoredTensor>*> order;
};

inline PreparedSafetensors prepare_safetensors(const char* where, const SafeTensors& file) {
    PreparedSafetensors out;
    for (const auto& entry : file.tensors()) out.order.push_back(&entry);
    // As the reference writer: widest dtype first (the enum's order), then by name.
    std::stable_sort(out.order.begin(), out.order.end(), [](const auto* a, const auto* b) {
        return static_cast<int>(a->second.dtype) > static_cast<int>(b->second.dtype);
    });
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!file.metadata().empty()) {
        nlohmann::ordered_json metadata = nlohmann::ordered_json::object();
        for (const auto& [key, value] : file.metadata()) metadata[key] = value;
        header["__metadata__"] = std::move(metadata);
    }
    std::uint64_t offset = 0;
    for (const auto* entry : out.order) {
        const StoredTensor& t = entry->second;
        nlohmann::ordered_json info = nlohmann::ordered_json::object();
        info["dtype"] = dtype_name(t.dtype);
        nlohmann::ordered_json shape = nlohmann::ordered_json::array();
        for (const Index d : t.shape) shape.push_back(static_cast<std::uint64_t>(d));
        info["shape"] = std::move(shape);
        info["data_offsets"] = {offset, offset + t.bytes.size()};
        offset += t.bytes.size();
        header[entry->first] = std::move(info);
    }
    try {
        out.header = header.dump();
    } catch (const nlohmann::json::type_error& e) {
        throw_safetensors(where, file.source(), "a tensor name or metadata string is not valid UTF-8 (" +
                                                    std::string(e.what()) + ")");
    }
    out.header.append((8 - out.header.size() % 8) % 8, ' ');
    return out;
}

/// Writes the whole file through write(const void*, std::size_t).
template <class Write>
void write_safetensors(const PreparedSafetensors& prepared, Write&& write) {
    const std::uint64_t n = prepared.header.size();
    std::array<std::uint8_t, 8> prefix{};
    for (std::size_t b = 0; b < 8; ++b) prefix[b] = static_cast<std::uint8_t>(n >> (8 * b));
    write(prefix.data(), prefix.size());
    write(prepared.header.data(), prepared.header.size());
    for (const auto* entry : prepared.order) write(entry->second.bytes.data(), entry->second.bytes.size());
}

}  // namespace detail

/// The file's bytes as the reference writer lays them out (what save_safetensors writes).
inline std::vector<std::uint8_t> serialize_safetensors(const SafeTensors& file) {
    const detail::PreparedSafetensors prepared = detail::prepare_safetensors("diffuse::serialize_safetensors", file);
    std::vector<std::uint8_t> out;
    detail::write_safetensors(prepared, [&out](const void* data, std::size_t n) {
        const auto* bytes = static_cast<const std::uint8_t*>(data);
        out.insert(out.end(), bytes, bytes + n);
    });
    return out;
}

/// Parses a whole file held in memory; `source` names it in error messages.
inline SafeTensors parse_safetensors(const std::uint8_t* data, std::size_t size, const std::string& source = "") {
    detail::MemorySource in(data, size);
    return detail::read_all("diffuse::parse_safetensors", source, in);
}

inline SafeTensors parse_safetensors(const std::vector<std::uint8_t>& bytes, const std::string& source = "") {
    return parse_safetensors(bytes.data(), bytes.size(), source);
}

/// Writes `file` to `path` atomically (a temporary in the same directory, fsync, rename).
inline void save_safetensors(const std::string& path, const SafeTensors& file) {
    constexpr const char* where = "diffuse::save_safetensors";
    const detail::PreparedSafetensors prepared = detail::prepare_safetensors(where, file);
    write_file_atomically(path, [&](auto&& write) { detail::write_safetensors(prepared, write); }, where);
}

/// Reads and checks a whole file.
inline SafeTensors load_safetensors(const std::string& path) {
    constexpr const char* where = "diffuse::load_safetensors";
    detail::FileSource in(where, path);
    return detail::read_all(where, path, in);
}

/// Reads and checks only the header (every check but reading the tensors' bytes).
inline SafetensorsHeader read_safetensors_header(const std::string& path) {
    constexpr const char* where = "diffuse::read_safetensors_header";
    detail::FileSource in(where, path);
    return detail::read_header(where, path, in);
}

}  // namespace diffuse
