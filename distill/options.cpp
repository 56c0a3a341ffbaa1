// options.cpp: the values of option tables as text and back (the tables are in options.h).
#include "distill/options.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "engine/error.h"

namespace kd::distill {

std::string format_number(double v) { return fmt::format("{:.15g}", v); }

std::string option_text(double v) { return format_number(v); }
std::string option_text(int64_t v) { return std::to_string(v); }
std::string option_text(bool v) { return v ? "true" : "false"; }
std::string option_text(const std::string& v) { return v; }
std::string option_text(const std::vector<std::string>& v) { return fmt::format("{}", fmt::join(v, ",")); }

const char* option_type(double) { return "number"; }
const char* option_type(int64_t) { return "integer"; }
const char* option_type(bool) { return "boolean"; }
const char* option_type(const std::string&) { return "text"; }
const char* option_type(const std::vector<std::string>&) { return "list"; }

void read_option(const std::string& method, const std::string& key, const std::string& text, double& value) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text.c_str(), &end);
  KD_CHECK(!text.empty() && end == text.c_str() + text.size() && errno != ERANGE,
           "{}: parameter {}={} is not a number; write it like {}={}", method, key, text, key,
           std::isfinite(value) ? format_number(value) : "1");
  value = v;
}

void read_option(const std::string& method, const std::string& key, const std::string& text, int64_t& value) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  KD_CHECK(!text.empty() && end == text.c_str() + text.size() && errno != ERANGE,
           "{}: parameter {}={} is not an integer; write it like {}={}", method, key, text, key, value);
  value = (int64_t)v;
}

void read_option(const std::string& method, const std::string& key, const std::string& text, bool& value) {
  std::string v = text;
  for (char& c : v) c = (char)std::tolower((unsigned char)c);
  if (v == "1" || v == "true" || v == "yes" || v == "on") {
    value = true;
  } else if (v == "0" || v == "false" || v == "no" || v == "off") {
    value = false;
  } else {
    KD_CHECK(false, "{}: parameter {}={} is not a boolean; use {}=true or {}=false", method, key, text, key, key);
  }
}

void read_option(const std::string&, const std::string&, const std::string& text, std::string& value) { value = text; }

void read_option(const std::string&, const std::string&, const std::string& text, std::vector<std::string>& value) {
  value.clear();
  std::string item;
  for (char c : text + ",") {
    if (c == ',') {
      if (!item.empty()) value.push_back(item);
      item.clear();
    } else if (!std::isspace((unsigned char)c)) {
      item += c;
    }
  }
}

void check_known_options(const std::string& method, const Params& params, std::vector<std::string> known) {
  std::vector<std::string> unknown;
  for (const auto& [key, value] : params)
    if (std::find(known.begin(), known.end(), key) == known.end()) unknown.push_back(key);
  if (unknown.empty()) return;
  std::sort(known.begin(), known.end());
  known.erase(std::unique(known.begin(), known.end()), known.end());
  KD_CHECK(false, "{}: unknown parameter{} {}; the parameters of {} are: {}", method, unknown.size() > 1 ? "s" : "",
           fmt::join(unknown, ", "), method, fmt::join(known, ", "));
}

}  // namespace kd::distill
