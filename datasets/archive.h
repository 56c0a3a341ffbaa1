// archive.h: reading whole files, gzip files and tar archives (plain or .tar.gz).
//
// The data sets arrive as the archives their authors publish (cifar-10-binary.tar.gz,
// train-images-idx3-ubyte.gz, a .tar.gz of an image folder), so the loaders read them directly
// instead of asking the user to unpack them first. Everything goes through zlib's gzread, which
// reads gzip-compressed and plain files alike. Every failure is a kd::Error naming the file.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kd::data {

// All bytes of a file (plain or gzip-compressed: gzip is detected from the content, not the
// name). Throws kd::Error naming the file when it is missing, unreadable or a corrupt gzip stream.
std::vector<uint8_t> read_file_bytes(const std::string& path);

// Whether `path` names a tar archive by its extension: .tar, .tar.gz, .tgz.
bool is_tar_path(const std::string& path);

// One member of a tar archive.
struct TarEntry {
  std::string name;           // full path inside the archive, "train/cat/0001.jpg"; directories end in '/'
  bool is_file = false;       // a regular file (type '0' or NUL); directories and links are not
  bool is_dir = false;
  std::vector<uint8_t> data;  // the file's bytes (empty unless is_file and wanted)
};

// Reads the tar archive at `path` (plain or gzip-compressed) member by member. For each
// member, `want(name)` decides whether its bytes are read into entry.data (skipped otherwise,
// which saves memory on big archives), then `visit(entry)` is called. Understands ustar and
// old-style v7 headers, GNU long names ('L') and pax extended headers ('x', for "path").
// Throws kd::Error naming the archive when a header checksum is wrong (not a tar file) or the
// archive ends inside a member (truncated).
void read_tar(const std::string& path, const std::function<bool(const std::string& name)>& want,
              const std::function<void(TarEntry& entry)>& visit);


}  // namespace kd::data
