// kdlab loss METHOD --student-logits S.npy --teacher-logits T.npy --labels Y.npy
//     [--student-feat NAME=FILE.npy ...] [--teacher-feat NAME=FILE.npy ...] [--helper-weights H.safetensors]
//     [--cost-matrix C.npy] [--assistant-logits A.npy ...] [--set key=value ...] [--epoch E]
//     [--total-epochs N] [--seed S] [--grad-out G.npy|G.safetensors|DIR] [--json] [--explain]
//     [--explain-dir DIR]
//
// Feature methods read the taps given by name (f0..fN stage outputs, pre1..preN before the
// stage's last ReLU, pooled; cam = class activation maps (B, K, H, W) for catkd); their helpers
// (regressor, projector) come from --helper-weights or are initialised from --seed. With
// features, --grad-out writes the gradient of every student input by name ("logits", "f2", ...)
// as a .safetensors file, or as NAME.npy files in a folder.
//
// The loss inspector: one distillation loss on logits saved as .npy, with its named parts, the
// gradient with respect to the student logits, and (--explain) every intermediate tensor in the
// order the equation computes it. The same Distiller the training loop uses computes it.
// --explain-dir DIR also writes every intermediate whole, as DIR/NAME.npy, with
// DIR/explain.json listing them in order ({"step", "name", "shape", "file"}): the printout
// abbreviates large tensors, the files do not (the notebooks read them).
#include <filesystem>
#include <fmt/format.h>
#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/atomic_file.h"
#include "distill/distiller.h"
#include "distill/fusion.h"
#include "distill/output/dgkd.h"
#include "distill/output/wkd_l.h"
#include "engine/npy.h"
#include "engine/ops.h"
#include "nn/safetensors.h"
#include "examples/cli/cli.h"

namespace kd::cli {

namespace {

struct LossOpts {
  std::string method, student, teacher, labels, cost_matrix, grad_out, explain_dir;
  std::vector<std::string> assistants, sets, student_feats, teacher_feats;
  std::string helper_weights;
  int64_t epoch = 0, total_epochs = 240, seed = 0;
  bool json = false, explain = false, list = false;
};

Tensor load_input(const std::string& path, const std::string& flag) {
  KD_CHECK(!path.empty(), "kdlab loss: {} is required", flag);
  KD_CHECK(std::filesystem::exists(path), "kdlab loss: {} {}: no such file", flag, path);
  return load_npy(path);
}

Tensor load_logits(const std::string& path, const std::string& flag) {
  Tensor z = load_input(path, flag);
  KD_CHECK(z.dtype() == DType::f32, "kdlab loss: {} {} holds {}; logits must be float32 (or float64) of shape (B, K)",
           flag, path, dtype_name(z.dtype()));
  KD_CHECK(z.dim() == 2 && z.size(0) > 0 && z.size(1) > 0,
           "kdlab loss: {} {} has shape {}; logits must be (B, K): B samples, K classes", flag, path, shape_str(z.shape()));
  return z.contiguous();
}

// "key=value" pairs from --set.
distill::Params parse_sets(const std::vector<std::string>& sets) {
  distill::Params p;
  for (const std::string& s : sets) {
    const size_t eq = s.find('=');
    KD_CHECK(eq != std::string::npos && eq > 0, "kdlab loss: --set {} is not key=value (for example --set T=4)", s);
    p[s.substr(0, eq)] = s.substr(eq + 1);
  }
  return p;
}

// --student-feat f2=FILE.npy ... into a ModelOutput's taps (feats[i] for fi, preact_feats[i] for prei, pooled).
std::vector<std::string> put_taps(nn::ModelOutput& out, const std::vector<std::string>& specs, const std::string& flag,
                                  int64_t B) {
  std::vector<std::string> names;
  for (const std::string& spec : specs) {
    const size_t eq = spec.find('=');
    KD_CHECK(eq != std::string::npos && eq > 0, "kdlab loss: {} {} must look like NAME=FILE.npy (for example f2=fs.npy)",
             flag, spec);
    const std::string name = spec.substr(0, eq);
    Tensor t = load_input(spec.substr(eq + 1), flag);
    KD_CHECK(t.dtype() == DType::f32 && t.dim() >= 2 && t.size(0) == B,
             "kdlab loss: {} {}: {} {} must be float32 with B = {} rows first", flag, spec, dtype_name(t.dtype()),
             shape_str(t.shape()), B);
    auto index_of = [&](const std::string& prefix) -> int64_t {
      if (name.rfind(prefix, 0) != 0 || name.size() == prefix.size()) return -1;
      for (size_t i = prefix.size(); i < name.size(); ++i)
        if (!std::isdigit((unsigned char)name[i])) return -1;
      return std::stoll(name.substr(prefix.size()));
    };
    t = t.contiguous();
    if (name == "pooled") {
      out.pooled = t;
    } else if (name == "cam") {  // class activation maps (B, K, H, W), read by catkd
      KD_CHECK(t.dim() == 4, "kdlab loss: {} {}: class activation maps must be (B, K, H, W), got {}", flag, spec,
               shape_str(t.shape()));
      out.cam = t;
    } else if (int64_t i = index_of("pre"); i >= 0) {
      if ((int64_t)out.preact_feats.size() <= i) out.preact_feats.resize(i + 1);
      out.preact_feats[i] = t;
    } else if (int64_t j = index_of("f"); j >= 0) {
      if ((int64_t)out.feats.size() <= j) out.feats.resize(j + 1);
      out.feats[j] = t;
    } else {
      throw Error(fmt::format("kdlab loss: {} {}: '{}' is not a tap; taps are f0..fN, pre1..preN, pooled and cam", flag,
                              spec, name));
    }
    names.push_back(name);
  }
  return names;
}

Tensor& tap_ref(nn::ModelOutput& out, const std::string& name) {
  if (name == "pooled") return out.pooled;
  if (name == "cam") return out.cam;
  if (name.rfind("pre", 0) == 0) return out.preact_feats[std::stoll(name.substr(3))];
  return out.feats[std::stoll(name.substr(1))];
}

void run_loss(const LossOpts& o) {
  if (o.list || o.method.empty()) {
    for (const auto& e : distill::distiller_registry()) fmt::print("{:<10} {:<9} {}\n", e.name, e.family, e.description);
    return;
  }
  // ---- inputs
  Tensor zs = load_logits(o.student, "--student-logits");  // (B, K)
  Tensor zt = load_logits(o.teacher, "--teacher-logits");  // (B, K)
  const int64_t B = zs.size(0), K = zs.size(1);
  KD_CHECK(zt.shape() == zs.shape(),
           "kdlab loss: --teacher-logits {} has shape {} but --student-logits {} has shape {}; they must match", o.teacher,
           shape_str(zt.shape()), o.student, shape_str(zs.shape()));
  Tensor y = load_input(o.labels, "--labels");
  KD_CHECK(y.dtype() == DType::i64, "kdlab loss: --labels {} holds {}; labels must be int64 (or int32) class indices",
           o.labels, dtype_name(y.dtype()));
  KD_CHECK(y.dim() == 1 && y.size(0) == B,
           "kdlab loss: --labels {} has shape {} but the logits have B = {} rows; expected ({})",
           o.labels, shape_str(y.shape()), B, B);
  std::vector<int64_t> yv = to_int_vector(y);
  for (int64_t b = 0; b < B; ++b)
    KD_CHECK(yv[b] >= 0 && yv[b] < K, "kdlab loss: --labels {}: label {} of sample {} is out of range for K = {} classes",
             o.labels, yv[b], b, K);

  // ---- feature taps (feature methods)
  nn::ModelOutput student, teacher;
  student.logits = zs;
  teacher.logits = zt;
  const std::vector<std::string> s_taps = put_taps(student, o.student_feats, "--student-feat", B);
  put_taps(teacher, o.teacher_feats, "--teacher-feat", B);

  // ---- the distiller (helpers sized from the taps' shapes)
  distill::DistillerContext ctx;
  ctx.num_classes = K;
  ctx.seed = (uint64_t)o.seed;
  ctx.student_sample = student;
  ctx.teacher_sample = teacher;
  std::shared_ptr<distill::Distiller> d = distill::create_distiller(o.method, parse_sets(o.sets), ctx);
  KD_CHECK(o.cost_matrix.empty() || d->needs().class_cost,
           "kdlab loss: --cost-matrix is read only by methods that take a class cost matrix (wkd_l), not by {}",
           o.method);
  if (!o.cost_matrix.empty()) {  // the class cost matrix it declared it reads: given at construction
    Tensor D = load_input(o.cost_matrix, "--cost-matrix");
    KD_CHECK(D.dtype() == DType::f32 && D.dim() == 2 && D.size(0) == K && D.size(1) == K,
             "kdlab loss: --cost-matrix {} is {} {}; expected float32 ({}, {}) for K = {} classes", o.cost_matrix,
             dtype_name(D.dtype()), shape_str(D.shape()), K, K, K);
    ctx.class_cost = D;
    d = distill::create_distiller(o.method, parse_sets(o.sets), ctx);
  }
  KD_CHECK(!(d->needs().feats || d->needs().pooled) || !o.student_feats.empty(),
           "kdlab loss: {} reads feature taps; give them with --student-feat NAME=FILE.npy and --teacher-feat "
           "NAME=FILE.npy (names f0..fN, pre1..preN, pooled; cam for catkd)",
           o.method);
  if (!o.helper_weights.empty()) {
    KD_CHECK(std::filesystem::exists(o.helper_weights), "kdlab loss: --helper-weights {}: no such file", o.helper_weights);
    d->load_state_dict(nn::load_safetensors(o.helper_weights).tensors, /*strict=*/true);
  }

  // what the method declared it reads besides the outputs (a fusion: any of its components)
  KD_CHECK(o.assistants.empty() || d->needs().assistants,
           "kdlab loss: --assistant-logits is read only by methods that take assistants (dgkd), not by {}", o.method);
  std::vector<Tensor> assistants;  // each (B, K), largest assistant first
  for (const std::string& path : o.assistants) {
    Tensor a = load_logits(path, "--assistant-logits");
    KD_CHECK(a.shape() == zs.shape(), "kdlab loss: --assistant-logits {} has shape {} but the student logits have {}", path,
             shape_str(a.shape()), shape_str(zs.shape()));
    assistants.push_back(a);
  }

  // ---- epoch: given, or the first epoch past any warm-up
  distill::Params params = d->params();
  int64_t epoch = o.epoch;
  if (epoch <= 0) {
    epoch = 1;
    for (const auto& [key, value] : params)  // "warmup", or a fusion component's "dkd.warmup"
      if (key == "warmup" || (key.size() > 7 && key.substr(key.size() - 7) == ".warmup"))
        epoch = std::max<int64_t>(epoch, std::stoll(value));
  }

  // ---- explain: every intermediate, in equation order (to stderr when stdout carries JSON)
  std::FILE* explain_out = o.json ? stderr : stdout;
  int step = 0;
  nlohmann::ordered_json explain_index = nlohmann::ordered_json::array();
  if (!o.explain_dir.empty()) std::filesystem::create_directories(o.explain_dir);
  if (o.explain) {
    std::string setting;
    for (const auto& [k, v] : params) setting += fmt::format(" {}={}", k, v);
    fmt::print(explain_out, "{} on B = {}, K = {}, epoch {}:{}\n", o.method, B, K, epoch, setting);
  }
  if (o.explain || !o.explain_dir.empty()) {
    d->explain = [&](const std::string& name, const Tensor& t) {
      ++step;
      if (o.explain) {
        std::string values = to_string(t.detach(), 3);
        for (size_t at = values.find('\n'); at != std::string::npos; at = values.find('\n', at + 1))
          values.insert(at + 1, "     ");  // indent every line of the values under the name
        fmt::print(explain_out, "[{:>2}] {:<20} {}\n     {}\n", step, name, shape_str(t.shape()), values);
      }
      if (!o.explain_dir.empty()) {
        // One file per intermediate; a name met twice (a fusion's parts, a method's stages) gets
        // its step number appended so that nothing is overwritten. '/' cannot be in a file name.
        std::string file = name;
        for (char& c : file)
          if (c == '/' || c == '\\') c = '_';
        for (const auto& e : explain_index)
          if (e["file"] == file + ".npy") file += fmt::format("_{}", step);
        file += ".npy";
        save_npy(o.explain_dir + "/" + file, t.detach().contiguous());
        explain_index.push_back({{"step", step}, {"name", name}, {"shape", t.shape()}, {"file", file}});
      }
    };
  }

  zs.requires_grad_();
  for (const auto& name : s_taps) tap_ref(student, name).requires_grad_();
  distill::BatchInfo batch;
  batch.labels = y;
  batch.epoch = epoch;
  batch.total_epochs = o.total_epochs;
  batch.assistant_logits = assistants;
  distill::LossBreakdown loss = distill::distill_loss(*d, student, teacher, batch);  // w_ce * CE + the method's terms
  if (!o.explain_dir.empty()) {
    std::string text = "[\n";  // one intermediate per line
    for (size_t i = 0; i < explain_index.size(); ++i)
      text += " " + explain_index[i].dump() + (i + 1 < explain_index.size() ? ",\n" : "\n");
    text += "]\n";
    write_file_atomic(o.explain_dir + "/explain.json", text);
  }

  if (!o.grad_out.empty()) {
    if (loss.total.requires_grad()) loss.total.backward();
    auto grad_of = [](const Tensor& t) {  // zeros where the loss does not depend on the input
      Tensor g = t.grad();
      return g.defined() ? g.contiguous() : zeros(t.shape());
    };
    if (s_taps.empty()) {
      save_npy(o.grad_out, grad_of(zs));
    } else {
      nn::NamedTensors grads{{"logits", grad_of(zs)}};
      for (const auto& name : s_taps) grads.push_back({name, grad_of(tap_ref(student, name))});
      if (o.grad_out.size() > 12 && o.grad_out.substr(o.grad_out.size() - 12) == ".safetensors") {
        nn::save_safetensors(o.grad_out, grads);
      } else {
        KD_CHECK(o.grad_out.size() < 4 || o.grad_out.substr(o.grad_out.size() - 4) != ".npy",
                 "kdlab loss: with student features --grad-out must be a .safetensors file or a folder, not {}",
                 o.grad_out);
        std::filesystem::create_directories(o.grad_out);
        for (auto& [name, g] : grads) save_npy(o.grad_out + "/" + name + ".npy", g);
      }
    }
  }

  if (o.json) {
    nlohmann::ordered_json j;
    j["method"] = o.method;
    j["loss"] = loss.total.item();
    j["parts"] = nlohmann::ordered_json::object();
    for (const auto& [name, value] : loss.parts) j["parts"][name] = value.item();
    std::cout << j.dump() << "\n";
    return;
  }
  std::string setting;
  for (const auto& [k, v] : params) setting += fmt::format(" {}={}", k, v);
  fmt::print("method {} (B = {}, K = {}, epoch {};{})\n", o.method, B, K, epoch, setting);
  fmt::print("loss   {:.8g}\n", loss.total.item());
  for (const auto& [name, value] : loss.parts) fmt::print("  {:<16} {:.8g}\n", name, value.item());
  if (!o.grad_out.empty())
    fmt::print("d loss / d student {} written to {}\n", s_taps.empty() ? "logits" : "inputs", o.grad_out);
}

}  // namespace

void register_loss(CLI::App& app) {
  auto* cmd = app.add_subcommand("loss", "Inspect a distillation loss on saved logits: value, named parts, gradient, "
                                         "every intermediate (--explain)");
  auto o = std::make_shared<LossOpts>();
  cmd->add_option("method", o->method, "method name (kdlab loss --list)");
  cmd->add_option("--student-logits", o->student, "student logits, float32 (B, K) .npy");
  cmd->add_option("--teacher-logits", o->teacher, "teacher logits, float32 (B, K) .npy");
  cmd->add_option("--labels", o->labels, "labels, int64 (B) .npy");
  cmd->add_option("--student-feat", o->student_feats, "a student feature tap NAME=FILE.npy (f0..fN, pre1..preN, pooled, cam); repeatable");
  cmd->add_option("--teacher-feat", o->teacher_feats, "a teacher feature tap NAME=FILE.npy; repeatable");
  cmd->add_option("--helper-weights", o->helper_weights, "the method's helper modules (regressor, projector) as .safetensors");
  cmd->add_option("--cost-matrix", o->cost_matrix, "wkd_l: category cost matrix (K, K) before sharpening .npy");
  cmd->add_option("--assistant-logits", o->assistants, "dgkd: an assistant's logits (B, K) .npy; repeatable, largest first");
  cmd->add_option("--set", o->sets, "a hyper-parameter: --set key=value (repeatable; names as in METHODS.md)");
  cmd->add_option("--epoch", o->epoch, "epoch counted from 1 (default: the first epoch past any warm-up)");
  cmd->add_option("--total-epochs", o->total_epochs, "epochs of the run, for schedules that decay (wkd_l)")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed of the method's generator (dgkd's guide dropping)")->capture_default_str();
  cmd->add_option("--grad-out", o->grad_out,
                  "write d loss / d student logits as float32 .npy (with features: a .safetensors file or a folder)");
  cmd->add_flag("--json", o->json, "print one JSON object {\"method\", \"loss\", \"parts\"} and nothing else on stdout");
  cmd->add_flag("--explain", o->explain, "print every intermediate tensor (name, shape, values) in equation order");
  cmd->add_option("--explain-dir", o->explain_dir,
                  "also write every intermediate whole as DIR/NAME.npy, listed in order in DIR/explain.json");
  cmd->add_flag("--list", o->list, "list the methods");
  cmd->callback([o] { run_loss(*o); });
}

}  // namespace kd::cli
