// sha256.h: SHA-256 (FIPS 180-4), to verify downloaded data-set archives (download.h).
//
// A plain, self-contained implementation: kdlab links no crypto library, and a checksum of a
// 170 MB archive needs nothing faster than this (about 1 s). Feed bytes in pieces of any size
// with update(), then read hex_digest(); sha256_hex() and sha256_file() are the one-call forms.
// tests/test_download.cpp checks it against the FIPS 180-2 test vectors.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kd::data {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(std::string_view text) { update(text.data(), text.size()); }
  // The digest as 64 lowercase hex characters. Ends the computation: call once.
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);  // one 64-byte block into state_

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;  // a partly filled block
  size_t buffered_ = 0;             // bytes in buffer_
  uint64_t total_bytes_ = 0;        // all bytes fed so far (the padding records it in bits)
};

std::string sha256_hex(std::string_view bytes);
// The SHA-256 of a whole file, read in 1 MiB pieces; a kd::Error naming the file when it cannot
// be read.
std::string sha256_file(const std::string& path);

}  // namespace kd::data
