// atomic_file.cpp: temporary file, fsync, rename, fsync of the folder (see atomic_file.h).
#include "engine/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>

#include "engine/error.h"

namespace kd {

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  auto fail = [&](const char* step, int err, int fd) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(fmt::format("cannot write '{}': {} failed: {} (is the folder '{}' there and writable, the disk not full?)",
                            path, step, std::strerror(err), dir));
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    throw Error(fmt::format("cannot write '{}': cannot create '{}': {} (is the folder '{}' there and writable?)", path,
                            tmp, std::strerror(err), dir));
  }
  const char* bytes = static_cast<const char*>(data);
  size_t done = 0;
  while (done < size) {
    const ssize_t w = ::write(fd, bytes + done, size - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) fail("write", errno, fd);
    done += (size_t)w;
  }
  if (::fsync(fd) != 0) fail("fsync", errno, fd);
  if (::close(fd) != 0) fail("close", errno, -1);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename", errno, -1);
  // The rename is an entry in the folder: sync the folder too (best effort: some file systems
  // refuse fsync on a directory, which loses nothing the rename did not already promise).
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace kd
