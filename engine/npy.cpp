// npy.cpp: reading and writing NumPy .npy files (format described in numpy/lib/format.py).
//
// Layout of a file:
//   "\x93NUMPY"  major  minor  header_len  header  data
//   6 bytes      1      1      2 bytes (v1) or 4 bytes (v2, v3), little-endian
// The header is a Python dict literal padded with spaces and ended by '\n', e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// and the data follows it: numel * itemsize bytes in C order. Everything read from a file is
// checked before it is used: sizes are validated before any allocation.
#include "engine/npy.h"
#include "engine/atomic_file.h"

#include <bit>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace kd {

static_assert(std::endian::native == std::endian::little, "npy.cpp copies little-endian data as is");

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
constexpr int64_t kMaxElements = int64_t(1) << 40;  // larger shapes are treated as corrupt

// ---- a parser for the header's Python dict literal (only what .npy headers contain)

struct HeaderValue {
  enum Kind { String, Bool, Tuple, Other } kind = Other;
  std::string str;
  bool flag = false;
  std::vector<int64_t> ints;
};

class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& source) : s_(text), src_(source) {}

  // {'key': value, ...}
  std::vector<std::pair<std::string, HeaderValue>> parse_dict() {
    std::vector<std::pair<std::string, HeaderValue>> out;
    expect('{');
    skip_ws();
    while (peek() != '}') {
      std::string key = parse_string();
      expect(':');
      out.emplace_back(key, parse_value());
      skip_ws();
      if (peek() == ',') {
        ++i_;
        skip_ws();
      } else {
        KD_CHECK(peek() == '}', "{}: malformed .npy header: expected ',' or '}}' at offset {} in {}", src_, i_, s_);
      }
    }
    ++i_;
    return out;
  }

 private:
  char peek() {
    KD_CHECK(i_ < s_.size(), "{}: malformed .npy header: it ends early: {}", src_, s_);
    return s_[i_];
  }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c) {
    skip_ws();
    KD_CHECK(peek() == c, "{}: malformed .npy header: expected '{}' at offset {} in {}", src_, c, i_, s_);
    ++i_;
  }
  std::string parse_string() {
    skip_ws();
    const char q = peek();
    KD_CHECK(q == '\'' || q == '"', "{}: malformed .npy header: expected a quoted key at offset {} in {}", src_, i_, s_);
    ++i_;
    std::string out;
    while (peek() != q) out += s_[i_++];
    ++i_;
    return out;
  }
  int64_t parse_int() {
    skip_ws();
    size_t start = i_;
    if (peek() == '-') ++i_;
    while (i_ < s_.size() && std::isdigit((unsigned char)s_[i_])) ++i_;
    std::string digits = s_.substr(start, i_ - start);
    KD_CHECK(!digits.empty() && digits != "-", "{}: malformed .npy header: expected an integer at offset {} in {}",
             src_, start, s_);
    KD_CHECK(digits.size() <= 18, "{}: .npy header has an absurd dimension {}", src_, digits);
    if (i_ < s_.size() && s_[i_] == 'L') ++i_;  // Python 2 long suffix
    return std::stoll(digits);
  }
  HeaderValue parse_value() {
    skip_ws();
    HeaderValue v;
    const char c = peek();
    if (c == '\'' || c == '"') {
      v.kind = HeaderValue::String;
      v.str = parse_string();
    } else if (s_.compare(i_, 4, "True") == 0) {
      v.kind = HeaderValue::Bool;
      v.flag = true;
      i_ += 4;
    } else if (s_.compare(i_, 5, "False") == 0) {
      v.kind = HeaderValue::Bool;
      i_ += 5;
    } else if (c == '(') {
      v.kind = HeaderValue::Tuple;
      ++i_;
      skip_ws();
      while (peek() != ')') {
        v.ints.push_back(parse_int());
        skip_ws();
        if (peek() == ',') {
          ++i_;
          skip_ws();
        } else {
          KD_CHECK(peek() == ')', "{}: malformed .npy header: expected ',' or ')' in the shape at offset {} in {}",
                   src_, i_, s_);
        }
      }
      ++i_;
    } else {
      // something else (e.g. a structured dtype's list): skip to the next top-level ',' or '}'
      int depth = 0;
      while (i_ < s_.size()) {
        const char d = s_[i_];
        if (d == '[' || d == '(' || d == '{') ++depth;
        if (d == ']' || d == ')' || d == '}') {
          if (depth == 0) break;
          --depth;
        }
        if (d == ',' && depth == 0) break;
        ++i_;
      }
    }
    return v;
  }

  const std::string& s_;
  const std::string& src_;
  size_t i_ = 0;
};

// How a .npy dtype maps onto a kdlab dtype.
struct NpyType {
  DType dtype;
  size_t itemsize;  // bytes per element in the file
};

NpyType npy_type(const std::string& descr, const std::string& source) {
  KD_CHECK(descr.empty() || descr[0] != '>',
           "{}: big-endian data ('{}') is not supported; save it little-endian, e.g. arr.astype(arr.dtype.newbyteorder('<'))",
           source, descr);
  if (descr == "<f4") return {DType::f32, 4};
  if (descr == "<f8") return {DType::f32, 8};  // converted to float32
  if (descr == "<i8") return {DType::i64, 8};
  if (descr == "<i4") return {DType::i64, 4};  // converted to int64
  if (descr == "|u1" || descr == "<u1") return {DType::u8, 1};
  if (descr == "|b1" || descr == "<b1") return {DType::u8, 1};  // bool as 0/1
  KD_CHECK(false, "{}: unsupported .npy dtype '{}'; supported: <f4, <f8, <i8, <i4, |u1, |b1", source, descr);
  return {DType::f32, 4};
}

uint32_t read_le(const std::string& b, size_t pos, size_t nbytes) {
  uint32_t v = 0;
  for (size_t k = 0; k < nbytes; ++k) v |= (uint32_t)(uint8_t)b[pos + k] << (8 * k);
  return v;
}

std::string header_dict(const Tensor& t) {
  std::string descr;
  switch (t.dtype()) {
    case DType::f32: descr = "<f4"; break;
    case DType::i64: descr = "<i8"; break;
    case DType::u8: descr = "|u1"; break;
  }
  std::string shape = "(";
  for (size_t d = 0; d < t.shape().size(); ++d) shape += std::to_string(t.shape()[d]) + (t.dim() == 1 ? "," : d + 1 < t.shape().size() ? ", " : "");
  shape += ")";
  return "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
}

}  // namespace

// ------------------------------------------------------------------ reading

Tensor parse_npy(const std::string& bytes, const std::string& source) {
  KD_CHECK(bytes.size() >= kMagicLen + 2 && bytes.compare(0, kMagicLen, kMagic, kMagicLen) == 0,
           "{}: not a .npy file (the magic string \\x93NUMPY is missing)", source);
  const int major = (uint8_t)bytes[6], minor = (uint8_t)bytes[7];
  KD_CHECK((major == 1 || major == 2 || major == 3) && minor == 0,
           "{}: unsupported .npy format version {}.{} (supported: 1.0, 2.0, 3.0)", source, major, minor);
  const size_t len_bytes = major == 1 ? 2 : 4;  // header_len: uint16 (v1) or uint32 (v2, v3)
  KD_CHECK(bytes.size() >= 8 + len_bytes, "{}: truncated .npy file: it ends inside the header length", source);
  const size_t header_len = read_le(bytes, 8, len_bytes);
  const size_t header_start = 8 + len_bytes;
  KD_CHECK(header_len <= bytes.size() - header_start,
           "{}: truncated .npy file: the header claims {} bytes but only {} follow", source, header_len,
           bytes.size() - header_start);
  const std::string header = bytes.substr(header_start, header_len);

  // 'descr', 'fortran_order', 'shape'
  std::string descr;
  bool fortran = false, have_descr = false, have_order = false, have_shape = false;
  std::vector<int64_t> shape;
  std::set<std::string> seen;
  for (auto& [key, v] : HeaderParser(header, source).parse_dict()) {
    KD_CHECK(seen.insert(key).second, "{}: malformed .npy header: the key '{}' appears twice in {}", source, key,
             header);
    if (key == "descr") {
      KD_CHECK(v.kind == HeaderValue::String, "{}: unsupported .npy dtype (structured or non-string descr) in {}",
               source, header);
      descr = v.str;
      have_descr = true;
    } else if (key == "fortran_order") {
      KD_CHECK(v.kind == HeaderValue::Bool, "{}: malformed .npy header: fortran_order is not True/False in {}",
               source, header);
      fortran = v.flag;
      have_order = true;
    } else if (key == "shape") {
      KD_CHECK(v.kind == HeaderValue::Tuple, "{}: malformed .npy header: shape is not a tuple in {}", source, header);
      shape = v.ints;
      have_shape = true;
    }
  }
  KD_CHECK(have_descr && have_order && have_shape,
           "{}: malformed .npy header: it needs 'descr', 'fortran_order' and 'shape', got {}", source, header);
  const NpyType type = npy_type(descr, source);
  KD_CHECK(!fortran, "{}: Fortran-order .npy files are not supported; save a C-order array (np.ascontiguousarray)",
           source);

  // the element count, checked for overflow and sanity before anything is allocated. A zero
  // dimension does not excuse the others: the strides multiply all of them, so the product of the
  // non-zero dimensions must be sane too (shape (0, 2^62, 2^62) would overflow them).
  int64_t numel = 1, span = 1;
  for (int64_t d : shape) {
    KD_CHECK(d >= 0, "{}: negative dimension {} in the .npy shape {}", source, d, shape_str(shape));
    const int64_t nonzero = d > 0 ? d : 1;
    KD_CHECK(span <= kMaxElements / nonzero,
             "{}: absurd .npy shape {} (its dimensions multiply past 2^40); the file is corrupt", source,
             shape_str(shape));
    span *= nonzero;
    numel *= d;
  }
  const size_t data_start = header_start + header_len;
  const size_t need = (size_t)numel * type.itemsize;
  const size_t have = bytes.size() - data_start;
  KD_CHECK(have >= need, "{}: truncated .npy data: shape {} of {} needs {} bytes but the file holds {}", source,
           shape_str(shape), descr, need, have);

  Tensor t = empty(shape, type.dtype);
  const char* src = bytes.data() + data_start;
  if (descr == "<f8") {
    float* o = t.data<float>();
    for (int64_t i = 0; i < numel; ++i) {
      double v;
      std::memcpy(&v, src + i * 8, 8);
      o[i] = (float)v;
    }
  } else if (descr == "<i4") {
    int64_t* o = t.data<int64_t>();
    for (int64_t i = 0; i < numel; ++i) {
      int32_t v;
      std::memcpy(&v, src + i * 4, 4);
      o[i] = v;
    }
  } else if (descr == "|b1" || descr == "<b1") {
    uint8_t* o = t.data<uint8_t>();
    for (int64_t i = 0; i < numel; ++i) o[i] = src[i] != 0 ? 1 : 0;
  } else if (need > 0) {
    std::memcpy(t.raw_data(), src, need);  // same layout as ours
  }
  return t;
}

Tensor load_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  KD_CHECK(f.good(), "{}: cannot open .npy file for reading: {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  KD_CHECK(!f.bad(), "{}: read error", path);
  return parse_npy(ss.str(), path);
}

// ------------------------------------------------------------------ writing

std::string serialize_npy(const Tensor& t) {
  KD_CHECK(t.defined(), "serialize_npy: undefined tensor");
  std::string dict = header_dict(t);
  // pad with spaces and end with '\n' so the data starts at a multiple of 64 bytes (as NumPy)
  auto padded = [&](size_t prefix) {
    const size_t unpadded = prefix + dict.size() + 1;
    return dict + std::string((64 - unpadded % 64) % 64, ' ') + "\n";
  };
  std::string header = padded(10);
  int major = 1;
  if (header.size() > 65535) {  // version 2.0: 4-byte header length
    major = 2;
    header = padded(12);
  }
  std::string out(kMagic, kMagicLen);
  out += (char)major;
  out += (char)0;
  const uint32_t len = (uint32_t)header.size();
  for (int k = 0; k < (major == 1 ? 2 : 4); ++k) out += (char)((len >> (8 * k)) & 0xff);
  out += header;
  Tensor c = t.detach().contiguous();  // any view (transposed, sliced, expanded) in C order
  out.append(static_cast<const char*>(c.raw_data()), (size_t)c.numel() * dtype_size(c.dtype()));
  return out;
}

void save_npy(const std::string& path, const Tensor& t) {
  const std::string bytes = serialize_npy(t);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    KD_CHECK(f.good(), "{}: cannot open for writing: {}", tmp, std::strerror(errno));
    f.write(bytes.data(), (std::streamsize)bytes.size());
    f.flush();
    if (!f.good()) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      KD_CHECK(false, "{}: write failed (disk full?)", tmp);
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);  // atomic: readers see the old file or the new one
  if (ec) {
    std::error_code ec2;
    std::filesystem::remove(tmp, ec2);
    KD_CHECK(false, "{}: cannot rename {} into place: {}", path, tmp, ec.message());
  }
}

}  // namespace kd
