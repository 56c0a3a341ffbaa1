// archive.cpp: whole-file reads through zlib (gzip or plain), a streaming tar reader, atomic writes.
#include "datasets/archive.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/error.h"

namespace kd::data {

namespace fs = std::filesystem;

namespace {

// An open file read through gzread: gzip-compressed or plain (zlib's "transparent" mode).
class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path) {
    std::error_code ec;
    KD_CHECK(fs::exists(path, ec), "cannot open '{}': the file does not exist", path);
    KD_CHECK(!fs::is_directory(path, ec), "cannot read '{}': it is a directory, expected a file", path);
    f_ = gzopen(path.c_str(), "rb");
    KD_CHECK(f_ != nullptr, "cannot open '{}': {}", path, std::strerror(errno));
    gzbuffer(f_, 1 << 18);
  }
  ~GzFile() {
    if (f_) gzclose(f_);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Reads up to n bytes; returns how many were read (fewer only at the end of the data).
  // A corrupt or truncated gzip stream is an error naming the file.
  size_t read(void* buf, size_t n) {
    size_t done = 0;
    while (done < n) {
      unsigned chunk = (unsigned)std::min<size_t>(n - done, 1u << 30);
      int got = gzread(f_, (char*)buf + done, chunk);
      if (got < 0) fail();
      if (got == 0) break;
      done += (size_t)got;
    }
    if (done < n) check_clean_end();
    return done;
  }

  // Called at the end of the data: zlib reports a gzip stream cut short as Z_BUF_ERROR.
  void check_clean_end() {
    int errnum = Z_OK;
    gzerror(f_, &errnum);
    if (errnum == Z_BUF_ERROR)
      throw Error(fmt::format("'{}' is truncated: the gzip stream ends unexpectedly (re-download or re-copy the file)",
                              path_));
    if (errnum != Z_OK) fail();
  }

  const std::string& path() const { return path_; }

 private:
  [[noreturn]] void fail() {
    int errnum = Z_OK;
    const char* msg = gzerror(f_, &errnum);
    if (errnum == Z_ERRNO) msg = std::strerror(errno);
    throw Error(fmt::format("cannot read '{}': {} (is the file corrupt?)", path_, msg ? msg : "unknown error"));
  }

  std::string path_;
  gzFile f_ = nullptr;
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A NUL- (or end-) terminated string field of a tar header.
std::string header_string(const uint8_t* p, size_t n) {
  size_t len = 0;
  while (len < n && p[len] != 0) ++len;
  return std::string((const char*)p, len);
}

// A numeric header field: octal digits (space/NUL padded), or GNU base-256 when the top bit of
// the first byte is set (used for sizes of 8 GiB and more). A base-256 value too large for 64
// bits reads as UINT64_MAX, which every size check refuses.
uint64_t header_number(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  if (p[0] & 0x80) {
    v = p[0] & 0x3f;
    for (size_t i = 1; i < n; ++i) {
      if (v >> 56) return UINT64_MAX;
      v = (v << 8) | p[i];
    }
    return v;
  }
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == 0)) ++i;
  for (; i < n && p[i] >= '0' && p[i] <= '7'; ++i) v = v * 8 + (uint64_t)(p[i] - '0');
  return v;
}

bool all_zero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != 0) return false;
  return true;
}

// The "path" record of a pax extended header: records are "<len> <key>=<value>\n".
std::string pax_path(const std::vector<uint8_t>& data) {
  std::string s(data.begin(), data.end());
  size_t pos = 0;
  while (pos < s.size()) {
    size_t sp = s.find(' ', pos);
    if (sp == std::string::npos) break;
    size_t len = std::strtoull(s.c_str() + pos, nullptr, 10);
    if (len == 0 || pos + len > s.size()) break;
    std::string rec = s.substr(sp + 1, pos + len - sp - 2);  // without the trailing '\n'
    if (rec.rfind("path=", 0) == 0) return rec.substr(5);
    pos += len;
  }
  return "";
}

}  // namespace

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  GzFile f(path);
  std::error_code ec;
  const auto on_disk = fs::file_size(path, ec);
  // Read straight into the result, growing it geometrically. The first read asks for the size on
  // disk + 1 (at most 64 MiB), so a plain file is read in one go and its end found at once; no
  // scratch buffer is cleared per file (a 1 MiB one used to be, for every image of a folder).
  std::vector<uint8_t> out;
  size_t want = ec ? (size_t)1 << 16 : (size_t)std::min<uintmax_t>(on_disk + 1, (uintmax_t)64 << 20);
  while (true) {
    const size_t old = out.size();
    out.resize(old + want);
    const size_t got = f.read(out.data() + old, want);
    out.resize(old + got);
    if (got < want) break;
    want = std::max(want, out.size());  // the next read doubles the size
  }
  return out;
}

bool is_tar_path(const std::string& path) {
  return ends_with(path, ".tar") || ends_with(path, ".tar.gz") || ends_with(path, ".tgz");
}

// Sizes a header may claim. A member is read into memory as its bytes arrive (never allocated
// from the claimed size up front), so these only turn absurd headers into clear errors.
constexpr uint64_t kMaxMemberSize = uint64_t(1) << 40;  // 1 TiB
constexpr uint64_t kMaxMetaSize = uint64_t(1) << 20;    // a GNU long name or a pax header: 1 MiB

void read_tar(const std::string& path, const std::function<bool(const std::string& name)>& want,
              const std::function<void(TarEntry& entry)>& visit) {
  GzFile f(path);
  uint8_t h[512];
  std::string long_name;  // from a GNU 'L' or pax 'x' header, applies to the next member
  std::vector<uint8_t> skip(1 << 16);
  int64_t member = 0;
  while (true) {
    size_t got = f.read(h, 512);
    if (got == 0) break;  // end of data without the two zero blocks: accepted, as GNU tar does
    KD_CHECK(got == 512, "'{}' is truncated: the archive ends inside a tar header (member {})", path, member);
    if (all_zero(h, 512)) break;  // end-of-archive marker

    // Checksum: the sum of the header bytes with the checksum field itself read as spaces.
    uint64_t stored = header_number(h + 148, 8);
    uint64_t sum = 0;
    int64_t signed_sum = 0;
    for (int i = 0; i < 512; ++i) {
      uint8_t b = (i >= 148 && i < 156) ? (uint8_t)' ' : h[i];
      sum += b;
      signed_sum += (int8_t)b;
    }
    KD_CHECK(stored == sum || (int64_t)stored == signed_sum,
             "'{}' is not a tar archive, or is corrupt: header {} has a wrong checksum (expected a .tar or .tar.gz)",
             path, member);

    std::string name = header_string(h, 100);
    if (std::memcmp(h + 257, "ustar", 5) == 0) {
      std::string prefix = header_string(h + 345, 155);
      if (!prefix.empty()) name = prefix + "/" + name;
    }
    if (!long_name.empty()) {
      name = long_name;
      long_name.clear();
    }
    const char type = (char)h[156];
    const uint64_t size = header_number(h + 124, 12);
    const bool meta = (type == 'L' || type == 'x');
    KD_CHECK(size <= (meta ? kMaxMetaSize : kMaxMemberSize),
             "'{}' is corrupt: header {} ('{}') claims a {} of {} bytes, more than the {} bytes kdlab accepts", path,
             member, name, meta ? "long-name / pax record" : "member", size, meta ? kMaxMetaSize : kMaxMemberSize);
    const uint64_t padded = (size + 511) / 512 * 512;

    TarEntry e;
    e.name = name;
    e.is_file = (type == '0' || type == 0 || type == '7');
    e.is_dir = (type == '5') || (e.is_file && ends_with(name, "/"));
    if (e.is_dir) e.is_file = false;
    const bool read_data = meta || (e.is_file && want(name));
    if (read_data) {
      // In chunks: memory grows with the bytes that are there, not with the size the header claims.
      for (uint64_t done = 0; done < size;) {
        const size_t chunk = (size_t)std::min<uint64_t>(size - done, 1 << 20);
        e.data.resize((size_t)done + chunk);
        KD_CHECK(f.read(e.data.data() + done, chunk) == chunk,
                 "'{}' is truncated: the archive ends inside member '{}'", path, name);
        done += chunk;
      }
      uint64_t rest = padded - size;
      KD_CHECK(f.read(skip.data(), rest) == rest, "'{}' is truncated: the archive ends inside member '{}'", path,
               name);
    } else {
      uint64_t left = padded;
      while (left > 0) {
        size_t n = (size_t)std::min<uint64_t>(left, skip.size());
        KD_CHECK(f.read(skip.data(), n) == n, "'{}' is truncated: the archive ends inside member '{}'", path, name);
        left -= n;
      }
    }
    if (type == 'L') {
      long_name = header_string(e.data.data(), e.data.size());
    } else if (type == 'x') {
      long_name = pax_path(e.data);
    } else {
      visit(e);
    }
    ++member;
  }
}


}  // namespace kd::data
