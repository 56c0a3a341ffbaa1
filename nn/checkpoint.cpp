#include "nn/checkpoint.h"

#include <bit>
#include <set>

#include "engine/version.h"
#include "nn/safetensors.h"

namespace kd::nn {

using json = nlohmann::json;

static constexpr const char* kFormat = "kdlab.training_checkpoint";

static void check_label(const std::string& label) {
  KD_CHECK(!label.empty() && label.find('.') == std::string::npos && label.rfind("optim", 0) != 0 && label != "state",
           "checkpoint module label '{}' must be non-empty, contain no '.', not be 'optim' (nor start with it) and not be 'state'",
           label);
}

// The tensor prefix and metadata key of an optimizer's label: "" -> "optim", "2" -> "optim_2".
static std::string optim_key(const std::string& label) {
  KD_CHECK(label.find('.') == std::string::npos, "checkpoint optimizer label '{}' must contain no '.'", label);
  return label.empty() ? "optim" : "optim_" + label;
}

void save_training_checkpoint(const std::string& path, const LabeledModules& modules, Optimizer* optimizer,
                              const TrainingCheckpoint& info) {
  save_training_checkpoint(path, modules, LabeledOptimizers{{"", optimizer}}, info);
}

void save_training_checkpoint(const std::string& path, const LabeledModules& modules,
                              const LabeledOptimizers& optimizers, const TrainingCheckpoint& info) {
  NamedTensors tensors;
  std::set<std::string> labels;
  for (const auto& [label, m] : modules) {
    check_label(label);
    KD_CHECK(labels.insert(label).second, "checkpoint module label '{}' is used twice", label);
    KD_CHECK(m != nullptr, "checkpoint module '{}' is null", label);
    for (const auto& [n, t] : m->state_dict()) tensors.emplace_back(label + "." + n, t);
  }
  std::map<std::string, std::string> meta;
  for (const auto& [label, optimizer] : optimizers) {
    if (!optimizer) continue;
    const std::string key = optim_key(label);
    KD_CHECK(!meta.count(key), "checkpoint optimizer label '{}' is used twice", label);
    OptimizerState st = optimizer->state_dict();
    for (const auto& [n, t] : st.tensors) tensors.emplace_back(key + "." + n, t);
    meta[key] = st.scalars.dump();
  }
  for (const auto& [n, t] : info.tensors) tensors.emplace_back("state." + n, t);
  meta["format"] = kFormat;
  meta["format_version"] = "1";
  meta["epoch"] = std::to_string(info.epoch);
  meta["step"] = std::to_string(info.step);
  meta["schedule"] = info.schedule.dump();
  meta["scalars"] = info.scalars.dump();
  meta["modules"] = json(std::vector<std::string>(labels.begin(), labels.end())).dump();
  for (const auto& [name, state] : info.rng_states) meta["rng." + name] = state;
  meta["kdlab_version"] = version_string();
  meta["git_revision"] = git_revision();
  save_safetensors(path, tensors, meta);
}

void save_training_checkpoint(const std::string& path, Module& model, Optimizer& optimizer,
                              const TrainingCheckpoint& info) {
  save_training_checkpoint(path, LabeledModules{{"model", &model}}, &optimizer, info);
}

static int64_t meta_int(const std::map<std::string, std::string>& meta, const std::string& key,
                        const std::string& path) {
  auto it = meta.find(key);
  KD_CHECK(it != meta.end(), "{}: the checkpoint metadata has no '{}'", path, key);
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(it->second, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  KD_CHECK(used == it->second.size() && used > 0, "{}: checkpoint metadata '{}' = '{}' is not an integer", path, key,
           it->second);
  return v;
}

static json meta_json(const std::map<std::string, std::string>& meta, const std::string& key,
                      const std::string& path) {
  auto it = meta.find(key);
  KD_CHECK(it != meta.end(), "{}: the checkpoint metadata has no '{}'", path, key);
  // The depth limit: a value nested a million deep parses, but printing it (json::dump, in error
  // messages and run records) recurses and would overflow the stack.
  constexpr int kMaxDepth = 64;
  auto limit_depth = [&](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= kMaxDepth)
      throw Error(fmt::format("{}: checkpoint metadata '{}' nests deeper than {} levels (a corrupt file?)", path, key,
                              kMaxDepth));
    return true;
  };
  try {
    return json::parse(it->second, limit_depth);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: checkpoint metadata '{}' is not valid JSON ({})", path, key, e.what()));
  }
}

// Checks that `got` (read from a file) has the JSON layout of `want` (what this program writes):
// the same keys in every object, arrays of the same length, and values of the same kind (any
// number where a floating-point one is written, an integer where an integer is). The optimizer
// then reads its state from the file without meeting a missing key or a wrong type. `where` is
// the JSON pointer of `got`, for the message.
static void check_same_layout(const json& got, const json& want, const std::string& where, const std::string& path) {
  auto fail = [&](const std::string& expected) {
    throw Error(fmt::format("{}: the optimizer state in the checkpoint does not have the layout this optimizer "
                            "writes: at '{}' it expected {}, got a JSON {} (a corrupt file, or one written by another "
                            "kdlab version or optimizer configuration)",
                            path, where.empty() ? "/" : where, expected, got.type_name()));
  };
  if (want.is_object()) {
    if (!got.is_object()) fail("an object");
    for (const auto& [key, value] : want.items()) {
      if (!got.contains(key)) fail(fmt::format("an object with the key '{}'", key));
      check_same_layout(got.at(key), value, where + "/" + key, path);
    }
    for (const auto& [key, value] : got.items())
      if (!want.contains(key)) fail(fmt::format("no key '{}'", key));
  } else if (want.is_array()) {
    if (!got.is_array() || got.size() != want.size()) fail(fmt::format("an array of {} values", want.size()));
    for (size_t i = 0; i < want.size(); ++i) check_same_layout(got[i], want[i], where + "/" + std::to_string(i), path);
  } else if (want.is_number_integer()) {
    if (!got.is_number_integer()) fail("an integer");
  } else if (want.is_number()) {
    if (!got.is_number()) fail("a number");
  } else if (want.is_string()) {
    if (!got.is_string()) fail("a string");
  } else if (want.is_boolean()) {
    if (!got.is_boolean()) fail("true or false");
  } else if (want.type() != got.type()) {
    fail(fmt::format("a JSON {}", want.type_name()));
  }
}

// Loads a checkpoint already read as a safetensors file; `path` names it in messages.
static TrainingCheckpoint load_checkpoint_file(const SafetensorsFile& file, const std::string& path,
                                               const LabeledModules& modules, const LabeledOptimizers& optimizers) {
  const auto& meta = file.metadata;
  auto fmt_it = meta.find("format");
  KD_CHECK(fmt_it != meta.end() && fmt_it->second == kFormat,
           "{}: not a kdlab training checkpoint (metadata 'format' is '{}'; expected '{}'). For plain weights use "
           "load_safetensors and Module::load_state_dict.",
           path, fmt_it == meta.end() ? "" : fmt_it->second, kFormat);
  KD_CHECK(meta_int(meta, "format_version", path) == 1, "{}: unsupported checkpoint format version {}", path,
           meta.at("format_version"));

  // Sort the tensors by their label.
  std::map<std::string, std::map<std::string, Tensor>> by_label;
  std::map<std::string, OptimizerState> optim_states;  // by key: "optim", "optim_2"
  NamedTensors state_tensors;
  for (const auto& [name, t] : file.tensors) {
    size_t dot = name.find('.');
    KD_CHECK(dot != std::string::npos, "{}: checkpoint tensor '{}' has no '<label>.' prefix", path, name);
    std::string label = name.substr(0, dot), rest = name.substr(dot + 1);
    if (label.rfind("optim", 0) == 0) optim_states[label].tensors.emplace_back(rest, t);
    else if (label == "state") state_tensors.emplace_back(rest, t);
    else by_label[label][rest] = t;
  }

  // Check every module against the file before changing anything.
  std::set<std::string> wanted;
  for (const auto& [label, m] : modules) {
    check_label(label);
    KD_CHECK(m != nullptr, "checkpoint module '{}' is null", label);
    wanted.insert(label);
    auto it = by_label.find(label);
    KD_CHECK(it != by_label.end(), "{}: the checkpoint holds no module '{}' (it holds: {})", path, label,
             meta.count("modules") ? meta.at("modules") : "?");
    LoadReport rep;
    std::set<std::string> own;
    for (const auto& [n, t] : m->state_dict()) {
      own.insert(n);
      auto f = it->second.find(n);
      if (f == it->second.end()) rep.missing.push_back(n);
      else if (f->second.shape() != t.shape())
        rep.shape_mismatch.push_back(fmt::format("{}: model {} vs file {}", n, shape_str(t.shape()),
                                                 shape_str(f->second.shape())));
    }
    for (const auto& [n, t] : it->second)
      if (!own.count(n)) rep.unexpected.push_back(n);
    KD_CHECK(rep.ok(), "{}: module '{}' ({}) does not match the checkpoint:\n{}", path, label, m->type_name(),
             rep.to_string());
  }
  for (const auto& [label, tensors] : by_label)
    KD_CHECK(wanted.count(label), "{}: the checkpoint holds module '{}' but it was not given to load into", path,
             label);

  for (const auto& [optim_label, optimizer] : optimizers) {
    if (!optimizer) continue;
    const std::string key = optim_key(optim_label);
    KD_CHECK(meta.count(key), "{}: the checkpoint holds no optimizer state{}", path,
             optim_label.empty() ? std::string() : " '" + key + "'");
    OptimizerState& optim_state = optim_states[key];
    optim_state.scalars = meta_json(meta, key, path);
    const json& type = optim_state.scalars.is_object() ? optim_state.scalars.value("type", json()) : json();
    KD_CHECK(!type.is_string() || type == optimizer->type_name(),
             "{}: the checkpoint's optimizer state was saved by {} but this optimizer is {}", path,
             type.get<std::string>(), optimizer->type_name());
    check_same_layout(optim_state.scalars, optimizer->state_dict().scalars, "", path);
    optimizer->load_state_dict(optim_state);  // checks everything before changing anything
  }
  for (const auto& [label, m] : modules) m->load_state_dict(by_label.at(label), true);

  TrainingCheckpoint out;
  out.tensors = std::move(state_tensors);
  out.epoch = meta_int(meta, "epoch", path);
  out.step = meta_int(meta, "step", path);
  out.schedule = meta_json(meta, "schedule", path);
  KD_CHECK(out.schedule.is_object() || out.schedule.is_null(),
           "{}: checkpoint metadata 'schedule' must be a JSON object or null, got a JSON {}", path,
           out.schedule.type_name());
  out.scalars = meta_json(meta, "scalars", path);
  KD_CHECK(out.scalars.is_object(), "{}: checkpoint metadata 'scalars' must be a JSON object, got a JSON {}", path,
           out.scalars.type_name());
  for (const auto& [key, value] : meta)
    if (key.rfind("rng.", 0) == 0) out.rng_states[key.substr(4)] = value;
  return out;
}

TrainingCheckpoint load_training_checkpoint(const std::string& path, const LabeledModules& modules,
                                            Optimizer* optimizer) {
  return load_checkpoint_file(load_safetensors(path), path, modules, LabeledOptimizers{{"", optimizer}});
}

TrainingCheckpoint load_training_checkpoint(const std::string& path, const LabeledModules& modules,
                                            const LabeledOptimizers& optimizers) {
  return load_checkpoint_file(load_safetensors(path), path, modules, optimizers);
}

TrainingCheckpoint parse_training_checkpoint(const std::string& bytes, const std::string& source,
                                             const LabeledModules& modules, Optimizer* optimizer) {
  return load_checkpoint_file(parse_safetensors(bytes, source), source, modules, LabeledOptimizers{{"", optimizer}});
}

TrainingCheckpoint load_training_checkpoint(const std::string& path, Module& model, Optimizer& optimizer) {
  return load_training_checkpoint(path, LabeledModules{{"model", &model}}, &optimizer);
}

Tensor exact_doubles(const std::vector<std::vector<double>>& rows) {
  const int64_t R = (int64_t)rows.size(), N = R ? (int64_t)rows[0].size() : 0;
  std::vector<int64_t> bits;
  bits.reserve((size_t)(R * N));
  for (const auto& row : rows) {
    KD_CHECK((int64_t)row.size() == N, "exact_doubles: rows of {} and {} values; all rows need the same length", N,
             row.size());
    for (double v : row) bits.push_back(std::bit_cast<int64_t>(v));
  }
  return from_vector(bits, {R, N});  // (R, N)
}

std::vector<std::vector<double>> doubles_from_exact(const Tensor& t, int64_t N, const std::string& what) {
  KD_CHECK(t.dim() == 2 && t.size(1) == N && t.dtype() == DType::i64,
           "{}: should be (rows, {}) int64 (doubles kept bit for bit), got {} {} (a checkpoint of another run?)", what,
           N, dtype_name(t.dtype()), shape_str(t.shape()));
  const std::vector<int64_t> bits = to_int_vector(t);
  std::vector<std::vector<double>> rows((size_t)t.size(0), std::vector<double>((size_t)N));
  for (size_t r = 0; r < rows.size(); ++r)
    for (int64_t i = 0; i < N; ++i) rows[r][(size_t)i] = std::bit_cast<double>(bits[r * (size_t)N + (size_t)i]);
  return rows;
}

std::map<std::string, std::string> rng_states(const std::vector<std::pair<std::string, const Generator*>>& gens) {
  std::map<std::string, std::string> out;
  for (const auto& [name, g] : gens) {
    KD_CHECK(g != nullptr, "rng_states: generator '{}' is null", name);
    KD_CHECK(out.emplace(name, g->state()).second, "rng_states: the name '{}' appears twice", name);
  }
  return out;
}

void restore_rng_states(const TrainingCheckpoint& ckpt, const std::vector<std::pair<std::string, Generator*>>& gens) {
  for (const auto& [name, g] : gens) {
    auto it = ckpt.rng_states.find(name);
    KD_CHECK(it != ckpt.rng_states.end(), "the checkpoint holds no state for the generator '{}'", name);
    g->set_state(it->second);
  }
}

}  // namespace kd::nn
