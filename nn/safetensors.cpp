#include "nn/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>
#include <vector>

#include "engine/atomic_file.h"

namespace kd::nn {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; kdlab reads it by memcpy on little-endian hosts only");

using json = nlohmann::json;

namespace {

// ------------------------------------------------------------------------------ dtypes

// The safetensors dtypes kdlab reads, their byte sizes, and what they become in memory.
enum class StDtype { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL };

struct StDtypeInfo {
  std::string_view name;
  StDtype st;
  uint64_t itemsize;
};

constexpr StDtypeInfo kReadable[] = {
    {"F32", StDtype::F32, 4}, {"F16", StDtype::F16, 2}, {"BF16", StDtype::BF16, 2}, {"F64", StDtype::F64, 8},
    {"I64", StDtype::I64, 8}, {"I32", StDtype::I32, 4}, {"I16", StDtype::I16, 2},   {"I8", StDtype::I8, 1},
    {"U8", StDtype::U8, 1},   {"BOOL", StDtype::BOOL, 1},
};
// Valid in the format, but with no kdlab equivalent.
constexpr std::string_view kKnownUnsupported[] = {"U16",    "U32",    "U64",     "F8_E4M3", "F8_E5M2",
                                                  "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",      "C64"};

constexpr std::string_view kSupportedList = "F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL";

std::string_view written_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
  }
  return "?";
}

// IEEE half -> float, including subnormals, infinities and NaN.
float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0x1f) {  // inf / nan
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal: rebias 15 -> 127
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // signed zero
    bits = sign;
  } else {  // subnormal half = mantissa * 2^-24, a normal float
    float v = (float)mantissa * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  return std::bit_cast<float>(bits);
}

// bfloat16 is the top half of a float32.
float bf16_to_float(uint16_t b) { return std::bit_cast<float>((uint32_t)b << 16); }

template <typename T>
T read_le(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// ------------------------------------------------------------------------------ header

// One tensor as the header describes it, validated.
struct Entry {
  std::string name;
  StDtype st;
  Shape shape;
  uint64_t begin = 0, end = 0;  // in the data buffer
};

// How deep a header's JSON may nest. A valid header nests 3 deep (the header object, a tensor's
// object, its shape array); the limit stops a hostile one nested a million deep, which parses
// but would overflow the stack when printed in an error message (json::dump recurses).
constexpr int kMaxHeaderDepth = 16;

// The header JSON, rejecting duplicate keys at any level. nlohmann::json keeps one of two equal
// keys silently, so the parse callback tracks the keys of every open object.
json parse_header_json(std::string_view text, const std::string& source) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= kMaxHeaderDepth)
      throw Error(fmt::format("{}: the safetensors header nests deeper than {} levels; not a safetensors file?",
                              source, kMaxHeaderDepth));
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == json::parse_event_t::key && !open_objects.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text.begin(), text.end(), callback);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: the safetensors header is not valid JSON ({})", source, e.what()));
  }
  KD_CHECK(duplicate.empty(),
           "{}: the safetensors header has the key '{}' twice (each tensor name and field must appear once)",
           source, duplicate);
  KD_CHECK(j.is_object(), "{}: the safetensors header must be a JSON object, got a JSON {}", source, j.type_name());
  return j;
}

uint64_t non_negative_integer(const json& v, const std::string& source, const std::string& name, const char* field) {
  KD_CHECK(v.is_number_integer(), "{}: tensor '{}': {} must hold integers, got {}", source, name, field, v.dump());
  KD_CHECK(v.is_number_unsigned(), "{}: tensor '{}': {} has the negative value {}", source, name, field, v.dump());
  return v.get<uint64_t>();
}

// Checks every entry of the header against a data buffer of `buffer_size` bytes. Nothing is
// allocated for tensors until all of this has passed.
std::vector<Entry> parse_header(std::string_view text, uint64_t buffer_size, const std::string& source,
                                std::map<std::string, std::string>* metadata) {
  json header = parse_header_json(text, source);
  std::vector<Entry> entries;
  for (auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      KD_CHECK(info.is_object(), "{}: __metadata__ must be an object of strings, got a JSON {}", source,
               info.type_name());
      for (auto& [key, value] : info.items()) {
        KD_CHECK(value.is_string(), "{}: __metadata__ value of '{}' must be a string, got {}", source, key,
                 value.dump());
        (*metadata)[key] = value.get<std::string>();
      }
      continue;
    }
    KD_CHECK(info.is_object(), "{}: tensor '{}' must be described by an object, got {}", source, name, info.dump());
    for (const char* field : {"dtype", "shape", "data_offsets"})
      KD_CHECK(info.contains(field), "{}: tensor '{}' has no '{}' field", source, name, field);
    Entry e;
    e.name = name;

    // dtype
    const json& dt = info["dtype"];
    KD_CHECK(dt.is_string(), "{}: tensor '{}': dtype must be a string, got {}", source, name, dt.dump());
    std::string dname = dt.get<std::string>();
    const StDtypeInfo* found = nullptr;
    for (const auto& d : kReadable)
      if (d.name == dname) found = &d;
    if (!found) {
      bool known = std::find(std::begin(kKnownUnsupported), std::end(kKnownUnsupported), dname) !=
                   std::end(kKnownUnsupported);
      throw Error(fmt::format("{}: tensor '{}' has {} dtype '{}' (kdlab reads {}; convert the tensor first)", source,
                              name, known ? "the unsupported" : "the unknown", dname, kSupportedList));
    }
    e.st = found->st;

    // shape, and its element count without overflow. A zero dimension does not excuse the others:
    // the strides multiply all of them, so the product of the non-zero ones must fit as well
    // (shape [0, 2^62, 2^62] holds no element but would overflow them).
    const json& shape = info["shape"];
    KD_CHECK(shape.is_array(), "{}: tensor '{}': shape must be an array, got {}", source, name, shape.dump());
    uint64_t numel = 1, span = 1;
    for (const json& s : shape) {
      uint64_t d = non_negative_integer(s, source, name, "shape");
      KD_CHECK(!__builtin_mul_overflow(span, d > 0 ? d : 1, &span) && span <= (uint64_t)INT64_MAX,
               "{}: tensor '{}': shape {} has dimensions that multiply past 2^63 (more elements than fit in 64 bits)",
               source, name, shape.dump());
      numel *= d;
      e.shape.push_back((int64_t)d);
    }
    uint64_t nbytes = 0;
    KD_CHECK(!__builtin_mul_overflow(numel, found->itemsize, &nbytes),
             "{}: tensor '{}': shape {} of {} is too large (byte count overflows)", source, name, shape.dump(), dname);

    // data_offsets: [begin, end) inside the buffer, exactly numel * itemsize bytes
    const json& off = info["data_offsets"];
    KD_CHECK(off.is_array() && off.size() == 2, "{}: tensor '{}': data_offsets must be [begin, end], got {}", source,
             name, off.dump());
    e.begin = non_negative_integer(off[0], source, name, "data_offsets");
    e.end = non_negative_integer(off[1], source, name, "data_offsets");
    KD_CHECK(e.begin <= e.end, "{}: tensor '{}': data_offsets [{}, {}] end before they begin", source, name, e.begin,
             e.end);
    KD_CHECK(e.end - e.begin == nbytes,
             "{}: tensor '{}': data_offsets [{}, {}] span {} bytes but shape {} of {} needs {} bytes", source, name,
             e.begin, e.end, e.end - e.begin, shape.dump(), dname, nbytes);
    KD_CHECK(e.end <= buffer_size,
             "{}: tensor '{}': data_offsets [{}, {}] run past the end of the data buffer ({} bytes); the file is "
             "truncated or corrupt",
             source, name, e.begin, e.end, buffer_size);
    entries.push_back(std::move(e));
  }

  // The regions must tile the buffer: sorted by offset, each starts where the previous ended.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  std::string prev = "the start of the buffer";
  for (const Entry& e : entries) {
    KD_CHECK(e.begin >= pos, "{}: the data of tensor '{}' [{}, {}) overlaps {} (which ends at byte {})", source,
             e.name, e.begin, e.end, prev, pos);
    KD_CHECK(e.begin == pos, "{}: a hole of {} bytes in the data buffer between {} (ends at byte {}) and tensor '{}' "
             "(starts at byte {})", source, e.begin - pos, prev, pos, e.name, e.begin);
    pos = e.end;
    prev = "tensor '" + e.name + "'";
  }
  KD_CHECK(pos == buffer_size, "{}: the data buffer has {} bytes but the tensors cover only the first {}", source,
           buffer_size, pos);
  return entries;
}

// The 8-byte length prefix, checked against the size of the whole file.
uint64_t header_length(const unsigned char* first8, uint64_t file_size, const std::string& source) {
  uint64_t n = read_le<uint64_t>(first8);
  KD_CHECK(n <= kSafetensorsMaxHeader, "{}: header length {} exceeds the limit of {} bytes; not a safetensors file?",
           source, n, kSafetensorsMaxHeader);
  KD_CHECK(n <= file_size - 8, "{}: header length {} runs past the end of the file ({} bytes); truncated file?",
           source, n, file_size);
  KD_CHECK(n >= 2, "{}: header length {} is too short to hold a JSON object", source, n);
  return n;
}

// One tensor from its bytes (entry.end - entry.begin of them), converted to a kdlab dtype.
Tensor decode(const Entry& e, const unsigned char* src) {
  int64_t n = shape_numel(e.shape);
  switch (e.st) {
    case StDtype::F32: {
      Tensor t = empty(e.shape, DType::f32);
      std::memcpy(t.raw_data(), src, (size_t)n * 4);
      return t;
    }
    case StDtype::I64: {
      Tensor t = empty(e.shape, DType::i64);
      std::memcpy(t.raw_data(), src, (size_t)n * 8);
      return t;
    }
    case StDtype::U8: {
      Tensor t = empty(e.shape, DType::u8);
      std::memcpy(t.raw_data(), src, (size_t)n);
      return t;
    }
    case StDtype::BOOL: {
      Tensor t = empty(e.shape, DType::u8);
      uint8_t* d = t.data<uint8_t>();
      for (int64_t i = 0; i < n; ++i) d[i] = src[i] != 0;
      return t;
    }
    case StDtype::F16:
    case StDtype::BF16:
    case StDtype::F64: {
      Tensor t = empty(e.shape, DType::f32);
      float* d = t.data<float>();
      for (int64_t i = 0; i < n; ++i) {
        if (e.st == StDtype::F16) d[i] = half_to_float(read_le<uint16_t>(src + 2 * i));
        else if (e.st == StDtype::BF16) d[i] = bf16_to_float(read_le<uint16_t>(src + 2 * i));
        else d[i] = (float)read_le<double>(src + 8 * i);
      }
      return t;
    }
    case StDtype::I32:
    case StDtype::I16:
    case StDtype::I8: {
      Tensor t = empty(e.shape, DType::i64);
      int64_t* d = t.data<int64_t>();
      for (int64_t i = 0; i < n; ++i) {
        if (e.st == StDtype::I32) d[i] = read_le<int32_t>(src + 4 * i);
        else if (e.st == StDtype::I16) d[i] = read_le<int16_t>(src + 2 * i);
        else d[i] = (int8_t)src[i];
      }
      return t;
    }
  }
  throw Error("safetensors: unreachable dtype");
}

}  // namespace

// ------------------------------------------------------------------------------ reading

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& source) {
  KD_CHECK(bytes.size() >= 8, "{}: {} bytes is too short for a safetensors file (at least the 8-byte header length)",
           source, bytes.size());
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  uint64_t n = header_length(p, bytes.size(), source);
  SafetensorsFile file;
  std::vector<Entry> entries =
      parse_header(std::string_view(bytes.data() + 8, n), bytes.size() - 8 - n, source, &file.metadata);
  const unsigned char* buffer = p + 8 + n;
  for (const Entry& e : entries) file.tensors.emplace_back(e.name, decode(e, buffer + e.begin));
  return file;
}

SafetensorsFile load_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  KD_CHECK(f.good(), "cannot open safetensors file '{}': {}", path, std::strerror(errno));
  // The size of the file this stream opened, not of whatever the path names by now: a checkpoint is
  // replaced atomically (a new file renamed over the name) while a reader may hold the old one.
  f.seekg(0, std::ios::end);
  const std::streamoff end = f.tellg();
  KD_CHECK(f.good() && end >= 0, "cannot read the size of '{}'", path);
  const uint64_t file_size = (uint64_t)end;
  f.seekg(0, std::ios::beg);
  KD_CHECK(file_size >= 8, "{}: {} bytes is too short for a safetensors file (at least the 8-byte header length)",
           path, file_size);
  unsigned char first8[8];
  f.read(reinterpret_cast<char*>(first8), 8);
  uint64_t n = header_length(first8, file_size, path);
  std::string header(n, '\0');
  f.read(header.data(), (std::streamsize)n);
  KD_CHECK(f.good(), "{}: read error in the header", path);

  SafetensorsFile file;
  std::vector<Entry> entries = parse_header(header, file_size - 8 - n, path, &file.metadata);
  // Read each tensor's bytes (already checked to lie inside the file).
  std::vector<unsigned char> chunk;
  for (const Entry& e : entries) {
    chunk.resize(e.end - e.begin);
    f.seekg((std::streamoff)(8 + n + e.begin));
    f.read(reinterpret_cast<char*>(chunk.data()), (std::streamsize)chunk.size());
    KD_CHECK(f.good(), "{}: read error in the data of tensor '{}'", path, e.name);
    file.tensors.emplace_back(e.name, decode(e, chunk.data()));
  }
  return file;
}

std::map<std::string, Tensor> to_map(const NamedTensors& tensors) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : tensors)
    KD_CHECK(out.emplace(name, t).second, "to_map: the name '{}' appears twice", name);
  return out;
}

// ------------------------------------------------------------------------------ writing

std::string serialize_safetensors(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  // The header keeps insertion order (ordered_json): "__metadata__" first, then the tensors.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  std::vector<Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    KD_CHECK(!name.empty() && name != "__metadata__", "save_safetensors: invalid tensor name '{}'", name);
    KD_CHECK(seen.insert(name).second, "save_safetensors: the name '{}' appears twice", name);
    KD_CHECK(t.defined(), "save_safetensors: tensor '{}' is undefined", name);
    Tensor c = t.detach().contiguous();  // any layout is written in C order
    uint64_t nbytes = (uint64_t)c.numel() * dtype_size(c.dtype());
    header[name] = {{"dtype", std::string(written_name(c.dtype()))}, {"shape", c.shape()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    contiguous.push_back(c);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // pad to a multiple of 8, as the Python library
  KD_CHECK(text.size() <= kSafetensorsMaxHeader, "save_safetensors: the header ({} bytes) exceeds {} bytes",
           text.size(), kSafetensorsMaxHeader);

  std::string out;
  out.reserve(8 + text.size() + offset);
  uint64_t n = text.size();
  out.append(reinterpret_cast<const char*>(&n), 8);  // little-endian host (static_assert above)
  out += text;
  for (const Tensor& c : contiguous)
    out.append(static_cast<const char*>(c.raw_data()), (size_t)c.numel() * dtype_size(c.dtype()));
  return out;
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, serialize_safetensors(tensors, metadata));
}


}  // namespace kd::nn
