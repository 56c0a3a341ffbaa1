// atomic_file.h: the project's one atomic file writer.
//
// Every file kdlab saves (checkpoints, weights, .npy, packed data sets, config.json, metrics,
// reports, plots) goes through write_file_atomic, so that a crash, a kill or a full disk while
// saving leaves either the old file or the new one, never a truncated mix:
//
//   1. the bytes go to a temporary file beside the target (PATH.tmp-<pid>, same file system);
//   2. fsync: the bytes are on the disk before the name can point at them;
//   3. rename over PATH (atomic on POSIX file systems);
//   4. fsync of the folder, so that the rename itself survives a power cut.
//
// A failure at any step removes the temporary file and throws kd::Error naming the path, the
// step and the system's reason. The folder must exist: a missing one is an error (usually a
// mistyped path), not silently made; callers that own a folder (a run folder) make it first.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kd {

void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic(path, bytes.data(), bytes.size());
}
inline void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
  write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace kd
