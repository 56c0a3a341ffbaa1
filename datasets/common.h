// common.h: small helpers the data-set loaders share (internal to datasets/).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "datasets/dataset.h"

namespace kd::data::detail {

// Throws unless split is "train" or "test"; `who` names the loader in the message.
void check_split(const std::string& split, const std::string& who);

// A Dataset with images (n, c, h, w) u8 and labels (n) i64 copied from the given buffers.
Dataset make_dataset(const std::string& name, const std::string& split, const std::string& source,
                     std::vector<uint8_t>&& pixels, const std::vector<int64_t>& labels, int64_t c, int64_t h,
                     int64_t w);

bool ends_with(const std::string& s, const std::string& suffix);
std::string basename_of(const std::string& path);

}  // namespace kd::data::detail
