#include "train/recipe.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <type_traits>

#include "engine/error.h"

namespace kd::train {

// One table names every field once: reading, writing and the list of known keys all use it.
template <typename F>
static void for_each_field(TrainConfig& c, F&& f) {
  f("model", c.model); f("dataset", c.dataset); f("data_dir", c.data_dir); f("num_classes", c.num_classes);
  f("train_limit", c.train_limit); f("test_limit", c.test_limit); f("train_subset", c.train_subset);
  f("val_split", c.val_split); f("coarse_labels", c.coarse_labels);
  f("epochs", c.epochs); f("batch_size", c.batch_size); f("optimizer", c.optimizer); f("lr", c.lr);
  f("momentum", c.momentum); f("nesterov", c.nesterov); f("weight_decay", c.weight_decay);
  f("no_decay_1d", c.no_decay_1d); f("schedule", c.schedule); f("schedule_per_iteration", c.schedule_per_iteration);
  f("milestones", c.milestones); f("lr_gamma", c.lr_gamma); f("warmup_epochs", c.warmup_epochs); f("min_lr", c.min_lr);
  f("augment", c.augment); f("prefetch", c.prefetch); f("seed", c.seed); f("threads", c.threads);
  f("log_every", c.log_every); f("save_every_epoch", c.save_every_epoch); f("label_noise", c.label_noise);
  f("skip_nonfinite", c.skip_nonfinite); f("peft", c.peft); f("init_weights", c.init_weights);
  f("train_only", c.train_only);
  f("input", c.input); f("teacher_input", c.teacher_input); f("chroma_cue", c.chroma_cue);
  f("color_jitter", c.color_jitter); f("paired_photometric", c.paired_photometric);
  f("method", c.method); f("method_params", c.method_params); f("teacher", c.teacher);
  f("teacher_weights", c.teacher_weights); f("teachers", c.teachers); f("teacher_combine", c.teacher_combine);
  f("teacher_weights_mix", c.teacher_weights_mix); f("assistants", c.assistants); f("teacher_cache", c.teacher_cache);
  f("teacher_cache_views", c.teacher_cache_views); f("teacher_cache_dir", c.teacher_cache_dir);
}

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j;
  TrainConfig copy = *this;
  for_each_field(copy, [&](const char* key, auto& value) { j[key] = value; });
  return j;
}

template <typename T>
struct is_vector : std::false_type {};
template <typename T>
struct is_vector<std::vector<T>> : std::true_type {};

// "30,60,90" -> [30, 60, 90] and "a:x,b:y" -> ["a:x", "b:y"] for list settings given as one
// string (the command line's --set); every other value is returned as it is.
template <typename V>
static nlohmann::json list_from_text(const nlohmann::json& v) {
  if constexpr (is_vector<V>::value) {
    if (!v.is_string()) return v;
    nlohmann::json list = nlohmann::json::array();
    const std::string text = v.get<std::string>();
    size_t start = 0;
    while (start <= text.size()) {
      size_t comma = text.find(',', start);
      if (comma == std::string::npos) comma = text.size();
      const std::string item = text.substr(start, comma - start);
      if (!item.empty()) {  // a number or true/false when it reads as one (never a nested list), else text
        const bool nested = item[0] == '[' || item[0] == '{';
        nlohmann::json parsed =
            nested ? nlohmann::json() : nlohmann::json::parse(item, nullptr, /*allow_exceptions=*/false);
        list.push_back(nested || parsed.is_discarded() || parsed.is_structured() ? nlohmann::json(item) : parsed);
      }
      start = comma + 1;
    }
    return list;
  }
  return v;
}

// nlohmann::json's get<integer>() converts a floating-point JSON number with a plain cast, and a
// value outside the integer's range (7e108, Inf) is undefined behaviour (found by
// fuzz/fuzz_recipe.cpp). Integer settings, and the items of integer lists, take whole numbers in
// range only; an unsigned one (the seed) no negative number.
template <typename V>
static void check_whole_numbers(const nlohmann::json& v, const std::string& source, const char* key) {
  if constexpr (is_vector<V>::value) {
    if (v.is_array())
      for (const auto& item : v) check_whole_numbers<typename V::value_type>(item, source, key);
  } else if constexpr (std::is_integral_v<V> && !std::is_same_v<V, bool>) {
    const double limit = std::ldexp(1.0, std::numeric_limits<V>::digits);  // 2^63 or 2^64
    const double low = std::is_signed_v<V> ? -limit : 0.0;
    if (v.is_number_float()) {
      const double d = v.get<double>();
      KD_CHECK(std::isfinite(d) && d == std::floor(d) && d >= low && d < limit,
               "{}: setting '{}' must be a whole number{}, got {}", source, key,
               std::is_signed_v<V> ? "" : " >= 0", v.dump());
    } else if (std::is_unsigned_v<V> && v.is_number_integer() && !v.is_number_unsigned()) {
      KD_CHECK(v.get<int64_t>() >= 0, "{}: setting '{}' must be a whole number >= 0, got {}", source, key, v.dump());
    }
  }
}

void apply_overrides(const nlohmann::json& j, TrainConfig& config, const std::string& source) {
  KD_CHECK(j.is_object(), "{}: a recipe must be a JSON object of settings", source);
  std::vector<std::string> known;
  for_each_field(config, [&](const char* key, auto&) { known.push_back(key); });
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key().rfind("_comment", 0) == 0 || it.key() == "description") continue;  // free text
    bool found = false;
    for_each_field(config, [&](const char* key, auto& value) {
      if (it.key() != key) return;
      found = true;
      try {
        using V = std::decay_t<decltype(value)>;
        const nlohmann::json given = list_from_text<V>(it.value());
        check_whole_numbers<V>(given, source, key);
        value = given.template get<V>();
      } catch (const nlohmann::json::exception&) {
        throw Error(fmt::format("{}: setting '{}' has the wrong type (got {})", source, key, it.value().dump()));
      }
    });
    KD_CHECK(found, "{}: unknown setting '{}'; known settings: {}", source, it.key(), fmt::join(known, ", "));
  }
}

// A parse callback that refuses JSON nested deeper than 64 levels: such a value parses, but
// printing it (error messages, the run's config.json) recurses once per level and would overflow
// the stack. Recipes nest two or three levels deep.
static nlohmann::json::parser_callback_t json_depth_limit(const std::string& source) {
  return [source](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
    constexpr int kMaxDepth = 64;
    if ((event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start) &&
        depth >= kMaxDepth)
      throw Error(fmt::format("{}: the JSON nests deeper than {} levels", source, kMaxDepth));
    return true;
  };
}

void load_recipe(const std::string& path, TrainConfig& config) {
  std::ifstream f(path);
  KD_CHECK(f.good(), "recipe file '{}' not found (recipes/ holds the standard ones)", path);
  std::stringstream ss;
  ss << f.rdbuf();
  parse_recipe(ss.str(), config, path);
}

void parse_recipe(const std::string& text, TrainConfig& config, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text, json_depth_limit(source));
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for numbers like 1e4150
    throw Error(fmt::format("recipe '{}' is not valid JSON: {}", source, e.what()));
  }
  apply_overrides(j, config, source);
}

static std::pair<std::string, nlohmann::json> split_override(const std::string& kv) {
  auto eq = kv.find('=');
  KD_CHECK(eq != std::string::npos && eq > 0, "override '{}' must look like key=value", kv);
  try {
    (void)nlohmann::json(kv).dump();  // throws on bytes that are not UTF-8 text
  } catch (const nlohmann::json::type_error&) {
    throw Error(fmt::format("override '{}' is not valid UTF-8 text", kv));
  }
  std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
  nlohmann::json v = nlohmann::json::parse(value, json_depth_limit("--set " + kv), /*allow_exceptions=*/false);
  if (v.is_discarded()) v = value;  // a bare string
  return {key, v};
}

void apply_override_string(const std::string& kv, TrainConfig& config) {
  auto [key, v] = split_override(kv);
  apply_overrides(nlohmann::json{{key, v}}, config, "--set " + kv);
}

bool is_setting(const std::string& key) {
  TrainConfig c;
  bool found = false;
  for_each_field(c, [&](const char* k, auto&) { found = found || key == k; });
  return found;
}

void apply_distill_override(const std::string& kv, TrainConfig& config) {
  auto [key, v] = split_override(kv);
  // "kd.T=4" (or "method.T=4"): explicitly a hyper-parameter of the method
  if (auto dot = key.find('.'); dot != std::string::npos) {
    const std::string prefix = key.substr(0, dot);
    if (!config.method_params.is_object()) config.method_params = nlohmann::json::object();
    // a fusion ("dkd+at"): "dkd.beta" stays whole, the fusion routes it to its component
    if (config.method.find('+') != std::string::npos && prefix != "method") {
      const std::string plus = "+" + config.method + "+";
      KD_CHECK(plus.find("+" + prefix + "+") != std::string::npos,
               "--set {}: '{}' is not a method of this run's fusion ({}); write --set <method>.{} with one of its "
               "methods",
               kv, prefix, config.method, key.substr(dot + 1));
      config.method_params[key] = v;
      return;
    }
    KD_CHECK(prefix == "method" || prefix == config.method || config.method.empty(),
             "--set {}: '{}' is not this run's method ({}); write --set {}.{} or --set method.{}", kv, prefix,
             config.method, config.method, key.substr(dot + 1), key.substr(dot + 1));
    config.method_params[key.substr(dot + 1)] = v;
    return;
  }
  if (is_setting(key)) {
    apply_overrides(nlohmann::json{{key, v}}, config, "--set " + kv);
    return;
  }
  if (!config.method_params.is_object()) config.method_params = nlohmann::json::object();
  config.method_params[key] = v;  // checked by the method (its option table, distill/options.h)
}

}  // namespace kd::train
