// image_folder.cpp: a folder of images, one subfolder per class, decoded with stb_image.
//
// Layout (as torchvision's ImageFolder): root/<class>/<image>, classes sorted by name get labels
// 0, 1, 2, ...; images inside a class sorted by path. When root has <split>/ subfolders
// (root/train/<class>/..., root/test/<class>/...), the split picks one. The same tree may be
// given as a .tar or .tar.gz archive, optionally wrapped in one top folder. Files other than
// .jpg .jpeg .png .bmp are ignored. Every image must have the same size and channel count as
// the first one: kdlab does not resize (resize your images first, or pick one size per data set).
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "datasets/archive.h"
#include "datasets/common.h"
#include "datasets/dataset.h"

// The one translation unit that compiles stb_image's implementation.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wtype-limits"
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
// Hardening (docs/RELIABILITY.md): only the decoders of the file types the loader accepts are
// compiled (stb picks a decoder from the content, so otherwise a GIF, TGA or PSD renamed .png
// would reach decoders nobody meant to expose), and no side may exceed kMaxImageSide, so a
// 60-byte header claiming 16 million x 16 million pixels is refused before any allocation.
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_MAX_DIMENSIONS 8192
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

namespace kd::data {

namespace fs = std::filesystem;

namespace {

constexpr int kMaxImageSide = STBI_MAX_DIMENSIONS;

// stb_image (2.27, Debian's libstb 2022-09) trusts the code counts of a JPEG huffman table (DHT
// segment): sixteen counts whose sum may reach 4080 are written into a table of 256 entries, a
// heap overflow found by fuzz/fuzz_image.cpp. This walks the JPEG's segments the way stb reads
// them and refuses any table declaring more than 256 codes before stb sees the file. Non-JPEG
// files and JPEGs that end early pass through (stb reports those itself).
void check_jpeg_huffman_tables(const std::vector<uint8_t>& b, const std::string& where) {
  const size_t n = b.size();
  // The SOI marker, FF D8, may come after any number of FF fill bytes: stb_image accepts
  // FF FF ... FF D8 as a JPEG (a walker that wanted FF D8 at byte 0 let such a file through with a
  // 257-code table: found by fuzz/fuzz_image.cpp).
  size_t p = 0;
  if (n < 4 || b[0] != 0xFF) return;  // not a JPEG
  while (p < n && b[p] == 0xFF) ++p;
  if (p >= n || b[p] != 0xD8) return;  // not a JPEG (no SOI marker)
  ++p;
  auto byte = [&](size_t i) -> int { return i < n ? b[i] : 0; };  // stb reads 0 past the end
  while (p + 4 <= n) {
    if (b[p] != 0xFF) {  // inside entropy-coded data: skip to the next marker
      ++p;
      continue;
    }
    const int marker = b[p + 1];
    if (marker == 0xFF || marker == 0x00 || (marker >= 0xD0 && marker <= 0xD7)) {  // fill, stuffed 0, RSTn
      ++p;
      continue;
    }
    if (marker == 0xD9) return;  // EOI
    const size_t length = (size_t)byte(p + 2) << 8 | (size_t)byte(p + 3);
    if (marker == 0xC4) {  // DHT: tables of 1 class/id byte, 16 code counts, then the symbols
      int64_t left = (int64_t)length - 2;
      size_t q = p + 4;
      while (left > 0 && q < n) {
        int codes = 0;
        for (int i = 1; i <= 16; ++i) codes += byte(q + i);
        KD_CHECK(codes <= 256,
                 "cannot decode image '{}': a JPEG huffman table declares {} codes, more than the 256 a table holds "
                 "(the file is corrupt or hostile; replace or delete it)",
                 where, codes);
        q += 17 + (size_t)codes;
        left -= 17 + codes;
      }
    }
    p += 2 + std::max<size_t>(length, 2);
  }
}

// stb_image grows its buffer for a PNG's compressed data (IDAT chunks) to the length each chunk
// header declares before it reads the chunk, so a 90-byte file declaring a 1.6 GB chunk makes it
// allocate 1.6 GB (found by fuzz/fuzz_image.cpp). This walks the PNG's chunks (8-byte signature,
// then per chunk: 4-byte big-endian length, 4-byte type, data, 4-byte CRC) and refuses any chunk
// that claims more bytes than the file has left. Non-PNG files pass through.
// It also refuses an empty IDAT chunk before the first non-empty one: stb_image then copies 0 bytes
// into its not-yet-allocated buffer, memcpy(NULL, ..., 0), which is undefined behaviour (found by
// fuzz/fuzz_image.cpp; such files do not come out of real encoders).
void check_png_chunk_lengths(const std::vector<uint8_t>& b, const std::string& where) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  const size_t n = b.size();
  if (n < 8 || std::memcmp(b.data(), kSignature, 8) != 0) return;  // not a PNG
  size_t p = 8;
  bool image_data = false;  // a non-empty IDAT chunk seen
  while (p + 8 <= n) {
    const uint64_t length = (uint64_t)b[p] << 24 | (uint64_t)b[p + 1] << 16 | (uint64_t)b[p + 2] << 8 | b[p + 3];
    const size_t left = n - (p + 8);  // bytes after this chunk's length and type
    KD_CHECK(length <= left,
             "cannot decode image '{}': a PNG chunk at byte {} declares {} bytes but only {} remain in the file "
             "(the file is truncated or corrupt; replace or delete it)",
             where, p, length, left);
    if (std::memcmp(&b[p + 4], "IDAT", 4) == 0) {
      KD_CHECK(length > 0 || image_data,
               "cannot decode image '{}': the PNG's first image-data chunk (IDAT, at byte {}) is empty (the file is "
               "corrupt; replace or delete it)",
               where, p);
      image_data = true;
    }
    if (std::memcmp(&b[p + 4], "IEND", 4) == 0) return;
    p += 12 + (size_t)length;
  }
}

// One image file, still encoded.
struct ImageFile {
  std::string where;           // path (or archive:member) for messages
  int64_t label = 0;
  std::vector<uint8_t> bytes;  // the encoded file
};

bool is_image_name(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return (char)std::tolower(c); });
  for (const char* ext : {".jpg", ".jpeg", ".png", ".bmp"})
    if (detail::ends_with(lower, ext)) return true;
  return false;
}

std::vector<std::string> split_path(const std::string& p) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : p) {
    if (c == '/') {
      if (!cur.empty() && cur != ".") parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty() && cur != ".") parts.push_back(cur);
  return parts;
}

std::string other_split(const std::string& split) { return split == "train" ? "test" : "train"; }

// ---- a folder on disk
std::vector<std::string> read_folder(const std::string& path, const std::string& split, std::string& root_out,
                                     std::vector<ImageFile>& files) {
  fs::path root(path);
  std::error_code ec;
  if (fs::is_directory(root / split, ec)) {
    root /= split;
  } else {
    KD_CHECK(!fs::is_directory(root / other_split(split), ec),
             "image folder '{}' has a {}/ subfolder but no {}/ one: add {}/<class>/... or load split '{}'", path,
             other_split(split), split, split, other_split(split));
  }
  root_out = root.string();
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  KD_CHECK(!ec, "cannot list the image folder '{}': {}", root.string(), ec.message());
  std::sort(classes.begin(), classes.end());
  KD_CHECK(!classes.empty(), "image folder '{}' has no class subfolders (expected {}/<class>/<image>.jpg|png|bmp)",
           root.string(), root.string());
  for (size_t k = 0; k < classes.size(); ++k) {
    const fs::path dir = root / classes[k];
    std::vector<std::string> paths;
    for (const auto& e : fs::recursive_directory_iterator(dir, ec))
      if (e.is_regular_file() && is_image_name(e.path().filename().string())) paths.push_back(e.path().string());
    KD_CHECK(!ec, "cannot list the class folder '{}': {}", dir.string(), ec.message());
    KD_CHECK(!paths.empty(), "class folder '{}' has no images (.jpg .jpeg .png .bmp): add images or remove the folder",
             dir.string());
    std::sort(paths.begin(), paths.end());
    for (const std::string& p : paths) files.push_back(ImageFile{p, (int64_t)k, read_file_bytes(p)});
  }
  return classes;
}

// ---- a .tar / .tar.gz archive of such a folder
std::vector<std::string> read_archive(const std::string& path, const std::string& split, std::string& root_out,
                                      std::vector<ImageFile>& files) {
  const std::string other = other_split(split);
  // Member bytes are kept for images that are not visibly in the other split's subfolder.
  auto in_other_split = [&](const std::vector<std::string>& parts) {
    return (parts.size() > 1 && parts[0] == other) || (parts.size() > 2 && parts[1] == other);
  };
  struct Member {
    std::vector<std::string> parts;
    bool is_dir;
    std::vector<uint8_t> data;
  };
  std::vector<Member> members;
  read_tar(
      path, [&](const std::string& name) { return is_image_name(name) && !in_other_split(split_path(name)); },
      [&](TarEntry& e) {
        if (!e.is_file && !e.is_dir) return;
        members.push_back(Member{split_path(e.name), e.is_dir, std::move(e.data)});
      });

  // Find the root: "<split>/", or "<top>/<split>/" under a single wrapping folder, or a single
  // wrapping folder whose images all sit at least two levels down, or the archive's top.
  std::set<std::string> tops;
  bool has_other = false;
  for (const Member& m : members)
    if (!m.parts.empty()) tops.insert(m.parts[0]);
  std::vector<std::string> root;
  auto has_prefix = [&](const std::vector<std::string>& pre) {
    for (const Member& m : members)
      if (m.parts.size() > pre.size() && std::equal(pre.begin(), pre.end(), m.parts.begin())) return true;
    return false;
  };
  if (has_prefix({split})) {
    root = {split};
  } else if (tops.size() == 1 && has_prefix({*tops.begin(), split})) {
    root = {*tops.begin(), split};
  } else {
    has_other = has_prefix({other}) || (tops.size() == 1 && has_prefix({*tops.begin(), other}));
    if (tops.size() == 1) {
      bool all_deep = true;
      for (const Member& m : members)
        if (!m.is_dir && is_image_name(m.parts.back()) && m.parts.size() < 3) all_deep = false;
      if (all_deep) root = {*tops.begin()};
    }
  }
  KD_CHECK(!has_other, "image archive '{}' has a {}/ folder but no {}/ one: load split '{}' or add {}/<class>/...",
           path, other, split, other, split);
  root_out = path;
  for (const std::string& r : root) root_out += (root_out == path ? ":" : "/") + r;

  // Classes: the folders right under the root (from directory members or file paths).
  const size_t depth = root.size();
  std::map<std::string, std::vector<Member*>> by_class;
  for (Member& m : members) {
    if (m.parts.size() <= depth || !std::equal(root.begin(), root.end(), m.parts.begin())) continue;
    const bool is_class_dir = m.is_dir && m.parts.size() == depth + 1;
    const bool is_image = !m.is_dir && m.parts.size() >= depth + 2 && is_image_name(m.parts.back());
    if (is_class_dir) by_class[m.parts[depth]];
    if (is_image) by_class[m.parts[depth]].push_back(&m);
  }
  KD_CHECK(!by_class.empty(), "image archive '{}' has no class folders with images (expected [{}/]<class>/<image>)",
           path, split);
  std::vector<std::string> classes;
  for (auto& [name, ms] : by_class) {  // std::map: sorted by class name
    const int64_t label = (int64_t)classes.size();
    classes.push_back(name);
    KD_CHECK(!ms.empty(), "class folder '{}/{}' in '{}' has no images (.jpg .jpeg .png .bmp)",
             root_out == path ? std::string(".") : root_out.substr(path.size() + 1), name, path);
    std::vector<std::pair<std::string, Member*>> sorted;
    for (Member* m : ms) {
      std::string joined;
      for (const std::string& p : m->parts) joined += (joined.empty() ? "" : "/") + p;
      sorted.emplace_back(joined, m);
    }
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [joined, m] : sorted) files.push_back(ImageFile{path + ":" + joined, label, std::move(m->data)});
  }
  return classes;
}

}  // namespace

Dataset load_image_folder(const std::string& path, const std::string& split) {
  detail::check_split(split, "load_image_folder");
  std::error_code ec;
  KD_CHECK(fs::exists(path, ec), "image folder '{}' does not exist (expected a folder of <class>/<image> files or a "
           ".tar.gz of one)", path);
  std::vector<ImageFile> files;
  std::string root;
  std::vector<std::string> classes;
  if (fs::is_directory(path, ec)) {
    classes = read_folder(path, split, root, files);
  } else {
    KD_CHECK(is_tar_path(path), "image folder '{}' is a file but not a .tar, .tar.gz or .tgz archive", path);
    classes = read_archive(path, split, root, files);
  }

  // stb_image takes the length as an int; the JPEG guard above runs on every file before stb.
  for (const ImageFile& f : files) {
    KD_CHECK(f.bytes.size() <= (size_t)INT32_MAX, "image '{}' has {} bytes, more than the 2 GiB kdlab decodes",
             f.where, f.bytes.size());
    check_jpeg_huffman_tables(f.bytes, f.where);
    check_png_chunk_lengths(f.bytes, f.where);
  }

  // The first image fixes the size and channel count of the data set.
  int w0 = 0, h0 = 0, c0 = 0;
  KD_CHECK(stbi_info_from_memory(files[0].bytes.data(), (int)files[0].bytes.size(), &w0, &h0, &c0),
           "cannot decode image '{}': {} (expected a JPEG, PNG or BMP file; replace or delete it)", files[0].where,
           stbi_failure_reason());
  KD_CHECK(w0 > 0 && h0 > 0 && w0 <= kMaxImageSide && h0 <= kMaxImageSide && c0 >= 1 && c0 <= 4,
           "image '{}' claims {} x {} pixels with {} channel(s); kdlab reads 1 to {} pixels a side and 1 to 4 channels "
           "(resize the images, or replace the file if it is corrupt)",
           files[0].where, w0, h0, c0, kMaxImageSide);
  const int64_t n = (int64_t)files.size(), per = (int64_t)w0 * h0 * c0;
  std::vector<uint8_t> pixels((size_t)(n * per));  // (N, C, H, W)
  std::vector<int64_t> labels(n);
  std::vector<std::string> errors(n);

  // Decode in parallel; each image writes its own slot, errors are kept per image and the first
  // one (in file order) is reported, so the outcome does not depend on the thread count.
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 64)
#endif
  for (int64_t i = 0; i < n; ++i) {
    ImageFile& f = files[i];
    labels[i] = f.label;
    int w = 0, h = 0, c = 0;
    uint8_t* hwc = stbi_load_from_memory(f.bytes.data(), (int)f.bytes.size(), &w, &h, &c, 0);
    if (!hwc) {
      errors[i] = fmt::format("cannot decode image '{}': {} (expected a JPEG, PNG or BMP file; replace or delete it)",
                              f.where, stbi_failure_reason());
    } else if (w != w0 || h != h0 || c != c0) {
      errors[i] = fmt::format(
          "image '{}' is {} x {} with {} channel(s), but '{}' is {} x {} with {}: all images of a folder must share "
          "one size and channel count (resize or convert them first)",
          f.where, w, h, c, files[0].where, w0, h0, c0);
    } else {
      // stb gives interleaved (H, W, C); the data set stores planes (C, H, W).
      uint8_t* dst = pixels.data() + i * per;
      for (int ch = 0; ch < c; ++ch)
        for (int64_t p = 0; p < (int64_t)w * h; ++p) dst[ch * (int64_t)w * h + p] = hwc[p * c + ch];
    }
    if (hwc) stbi_image_free(hwc);
    std::vector<uint8_t>().swap(f.bytes);  // the encoded bytes are no longer needed
  }
  for (const std::string& e : errors)
    if (!e.empty()) throw Error(e);

  Dataset d = detail::make_dataset("imagefolder", split, root, std::move(pixels), labels, c0, h0, w0);
  d.class_names = classes;
  // An arbitrary folder has no published statistics: normalise with those of the loaded images.
  channel_stats(d.images, d.mean, d.std);
  return d;
}

}  // namespace kd::data
