// kdlab analyze --teacher M:W --student M:W [--student M:W ...] --dataset D --data-dir DIR
//               [--split test] [--limit N] [--out DIR]
//
// Compares each student with the teacher on the same images (analysis/analysis.h): accuracy,
// top-1 agreement, KL and JS between predictions, calibration (ECE), linear and debiased CKA of
// the pooled features, invariance under flip / shift / noise, and cost (parameters, MACs,
// latency, throughput, compression). Give a distilled and an independently trained student to
// see them side by side. Writes DIR/analysis.json and DIR/report.md, and prints the report.
#include <chrono>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/atomic_file.h"
#include "analysis/analysis.h"
#include "train/progress.h"
#include "distill/teacher_cache.h"
#include "train/train.h"
#include "examples/cli/cli.h"
#include "nn/safetensors.h"

namespace kd::cli {

void register_analyze(CLI::App& app) {
  auto* cmd = app.add_subcommand("analyze", "What did the student learn from its teacher? Agreement, CKA, calibration, invariance, cost");
  struct Opts {
    std::string teacher, split = "test", out;
    std::vector<std::string> students;
    CommonOptions common;  // --dataset, --data-dir, --threads
    int64_t limit = 0, cka_samples = 2000, layer_samples = 500, cam_samples = 500, adv_samples = 500;
    double eps = 8.0 / 255.0;
    int pgd_steps = 10;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--teacher", o->teacher, "MODEL:WEIGHTS of the teacher")->required();
  cmd->add_option("--student", o->students, "MODEL:WEIGHTS of a student (repeatable)")->required();
  add_data_options(cmd, o->common)->required();
  cmd->add_option("--split", o->split, "train or test")->capture_default_str();
  cmd->add_option("--limit", o->limit, "use a fixed random sample of N images (seed 0; default all, in a fixed random order)");
  cmd->add_option("--cka-samples", o->cka_samples, "images for the debiased CKA (n x n Gram matrices)")
      ->capture_default_str();
  cmd->add_option("--layer-samples", o->layer_samples, "images for the layer-by-layer CKA heat map")->capture_default_str();
  cmd->add_option("--cam-samples", o->cam_samples, "images for the CAM agreement")->capture_default_str();
  cmd->add_option("--adv-samples", o->adv_samples, "images for the adversarial transfer (0: skip)")->capture_default_str();
  cmd->add_option("--eps", o->eps, "L-inf radius of FGSM / PGD in pixel units")->capture_default_str();
  cmd->add_option("--pgd-steps", o->pgd_steps, "PGD iterations")->capture_default_str();
  cmd->add_option("--out", o->out, "folder for analysis.json, report.md and the PNGs");
  add_threads_option(cmd, o->common.threads);
  cmd->callback([o] {
    train::set_threads(o->common.threads);
    data::Dataset ds = data::load_dataset(o->common.dataset, o->common.data_dir, o->split);
    // One fixed random order (seed 0) for everything below: image folders and some archives are
    // sorted by class, so "the first N images" (--limit, and the first --cka-samples,
    // --cam-samples, ... of them) would otherwise cover only the first classes.
    const int64_t n = o->limit > 0 ? std::min(o->limit, ds.size()) : ds.size();
    ds = data::random_subset(ds, n, /*seed=*/0);
    const int64_t K = ds.num_classes();
    distill::Guide teacher = distill::load_guide_spec(o->teacher, K, ds);
    std::vector<distill::Guide> students;
    for (const auto& s : o->students) students.push_back(distill::load_guide_spec(s, K, ds));

    fmt::print("predicting on {} images ...\n", ds.size());
    const std::vector<std::string> transforms{"hflip", "shift", "noise"};
    // A progress bar over the steps below (each model: clean predictions, one pass per transform,
    // cost; the teacher's taps and CAMs; each student: taps, CAMs, FGSM, PGD), with images/s
    // counted over the images each step ran.
    const int64_t S = (int64_t)students.size(), per_model = 2 + (int64_t)transforms.size();
    const int64_t total_steps = per_model * (1 + S) + 2 + S * (2 + (o->adv_samples > 0 ? 2 : 0));
    train::Progress progress(total_steps, "analyze", 1);
    int64_t steps_done = 0, images_done = 0;
    const auto start = std::chrono::steady_clock::now();
    auto tick = [&](int64_t images) {
      images_done += images;
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      progress.update(++steps_done, -1, 0, s > 0 ? images_done / s : 0.0);
    };
    auto describe = [&](distill::Guide& g) {
      analysis::Outputs out = analysis::predict(*g.net, ds, 256);
      tick(ds.size());
      nlohmann::json j;
      j["model"] = g.model;
      j["weights"] = g.weights;
      j["accuracy"] = analysis::accuracy(out.logits, ds.labels);
      j["ece"] = analysis::expected_calibration_error(out.logits, ds.labels, 15);
      for (const auto& t : transforms) {
        j["invariance"][t] = analysis::top1_agreement(out.logits, analysis::predict(*g.net, ds, 256, t).logits);
        tick(ds.size());
      }
      analysis::Cost c = analysis::measure_cost(*g.net, ds.channels(), ds.height());
      tick(0);
      j["cost"] = {{"parameters", c.parameters}, {"macs_per_image", c.macs_per_image},
                   {"latency_ms_batch1", c.latency_ms}, {"images_per_s_batch128", c.images_per_s}};
      return std::make_pair(out, j);
    };
    auto [t_out, t_json] = describe(teacher);
    nlohmann::json report = {{"dataset", o->common.dataset}, {"split", o->split}, {"images", ds.size()}, {"teacher", t_json}};
    report["students"] = nlohmann::json::array();
    const int64_t n_cka = std::min<int64_t>(o->cka_samples, ds.size());
    const std::string out_dir = o->out.empty() ? std::string(".") : o->out;
    if (!o->out.empty()) std::filesystem::create_directories(o->out);
    auto t_taps = analysis::feature_taps(*teacher.net, ds, o->layer_samples);
    tick(std::min<int64_t>(o->layer_samples, ds.size()));
    Tensor t_cams = analysis::class_activation_maps(*teacher.net, ds, o->cam_samples);
    tick(std::min<int64_t>(o->cam_samples, ds.size()));
    int64_t index = 0;
    for (auto& s : students) {
      auto [s_out, s_json] = describe(s);
      ++index;
      auto s_taps = analysis::feature_taps(*s.net, ds, o->layer_samples);
      tick(std::min<int64_t>(o->layer_samples, ds.size()));
      Tensor layer = analysis::layer_cka_matrix(t_taps, s_taps);  // (Lt, Ls)
      std::vector<std::string> rn, cn;
      for (auto& [n, x] : t_taps) rn.push_back("teacher " + n);
      for (auto& [n, x] : s_taps) cn.push_back(n);
      const std::string heat = fmt::format("{}/layer_cka_student{}.png", out_dir, index);
      if (!o->out.empty())
        analysis::heatmap_png(heat, layer, rn, cn, fmt::format("linear CKA: {} vs {}", teacher.model, s.model));
      Tensor s_cams = analysis::class_activation_maps(*s.net, ds, o->cam_samples);
      tick(std::min<int64_t>(o->cam_samples, ds.size()));
      const std::string grid = fmt::format("{}/cams_student{}.png", out_dir, index);
      if (!o->out.empty()) analysis::cam_grid_png(grid, ds, t_cams, s_cams, 8);
      nlohmann::json layer_json = nlohmann::json::array();
      for (int64_t i = 0; i < layer.size(0); ++i) {
        nlohmann::json row = nlohmann::json::array();
        for (int64_t j = 0; j < layer.size(1); ++j) row.push_back(layer.at({i, j}));
        layer_json.push_back(row);
      }
      s_json["layer_cka"] = {{"teacher_taps", rn}, {"student_taps", cn}, {"matrix", layer_json}};
      s_json["localisation"] = {{"cam_correlation", analysis::cam_correlation(t_cams, s_cams)},
                                {"cam_top20_iou", analysis::cam_top_iou(t_cams, s_cams, 0.2)}};
      if (o->adv_samples > 0) {
        for (auto [name, steps] : {std::pair<std::string, int>{"fgsm", 1}, {"pgd", o->pgd_steps}}) {
          analysis::Transfer tr = analysis::adversarial_transfer(*teacher.net, *s.net, ds, o->adv_samples, o->eps, steps);
          s_json["adversarial"][name] = {{"eps", o->eps}, {"steps", steps}, {"teacher_fooled", tr.teacher_fooled},
                                         {"student_fooling_rate", tr.student_fooling_rate},
                                         {"same_wrong_label", tr.same_wrong_label}};
          tick(std::min<int64_t>(o->adv_samples, ds.size()) * (steps + 1));
        }
      }
      s_json["vs_teacher"] = {
          {"top1_agreement", analysis::top1_agreement(t_out.logits, s_out.logits)},
          {"kl_teacher_student", analysis::mean_kl(t_out.logits, s_out.logits)},
          {"js", analysis::mean_js(t_out.logits, s_out.logits)},
          {"linear_cka_pooled", analysis::linear_cka(t_out.pooled, s_out.pooled)},
          {"debiased_cka_pooled", analysis::debiased_linear_cka(t_out.pooled.slice(0, 0, n_cka),
                                                                s_out.pooled.slice(0, 0, n_cka))},
          {"rbf_cka_pooled", analysis::rbf_cka(t_out.pooled.slice(0, 0, n_cka), s_out.pooled.slice(0, 0, n_cka))},
          {"compression_params", (double)t_json["cost"]["parameters"].get<int64_t>() /
                                     std::max<int64_t>(1, s_json["cost"]["parameters"].get<int64_t>())},
          {"compression_macs", (double)t_json["cost"]["macs_per_image"].get<int64_t>() /
                                   std::max<int64_t>(1, s_json["cost"]["macs_per_image"].get<int64_t>())}};
      report["students"].push_back(s_json);
    }
    progress.finish();

    // the markdown report
    std::string md = fmt::format("# kdlab analyze: {} / {} ({} images in a fixed random order, seed 0)\n\nteacher {} ({})\n\n", o->common.dataset, o->split,
                                 ds.size(), teacher.model, teacher.weights);
    md += "| model | weights | acc % | ECE % | flip inv. % | shift inv. % | noise inv. % | params | MMACs | ms/image (b=1) | img/s (b=128) |\n";
    md += "|---|---|---|---|---|---|---|---|---|---|---|\n";
    auto row = [&](const nlohmann::json& j) {
      md += fmt::format("| {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {} | {:.1f} | {:.2f} | {:.0f} |\n",
                        j["model"].get<std::string>(), j["weights"].get<std::string>(), 100 * j["accuracy"].get<double>(),
                        100 * j["ece"].get<double>(), 100 * j["invariance"]["hflip"].get<double>(),
                        100 * j["invariance"]["shift"].get<double>(), 100 * j["invariance"]["noise"].get<double>(),
                        j["cost"]["parameters"].get<int64_t>(), j["cost"]["macs_per_image"].get<int64_t>() / 1e6,
                        j["cost"]["latency_ms_batch1"].get<double>(), j["cost"]["images_per_s_batch128"].get<double>());
    };
    row(t_json);
    for (auto& s : report["students"]) row(s);
    md += "\n| student | top-1 agreement % | KL(t‖s) | JS | linear CKA (pooled) | debiased CKA | RBF CKA | CAM corr. | CAM "
          "top-20% IoU | compression (params / MACs) |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for (auto& s : report["students"]) {
      const auto& v = s["vs_teacher"];
      md += fmt::format("| {} ({}) | {:.2f} | {:.4f} | {:.4f} | {:.4f} | {:.4f} | {:.4f} | {:.3f} | {:.3f} | {:.1f}x / {:.1f}x |\n",
                        s["model"].get<std::string>(), s["weights"].get<std::string>(),
                        100 * v["top1_agreement"].get<double>(), v["kl_teacher_student"].get<double>(),
                        v["js"].get<double>(), v["linear_cka_pooled"].get<double>(),
                        v["debiased_cka_pooled"].get<double>(), v["rbf_cka_pooled"].get<double>(),
                        s["localisation"]["cam_correlation"].get<double>(), s["localisation"]["cam_top20_iou"].get<double>(),
                        v["compression_params"].get<double>(), v["compression_macs"].get<double>());
    }
    if (o->adv_samples > 0) {
      md += fmt::format("\nAdversarial transfer: images crafted on the teacher (the first {} images of that order, L-inf eps {:.4f} in pixel "
                        "units; PGD {} steps). Fooling rate: wrong on the adversarial image among the images the model "
                        "got right; same label: fooled students that chose the teacher's adversarial label.\n\n"
                        "| student | FGSM: teacher fooled % | FGSM: student fooled % | FGSM: same label % | PGD: teacher "
                        "fooled % | PGD: student fooled % | PGD: same label % |\n|---|---|---|---|---|---|---|\n",
                        std::min<int64_t>(o->adv_samples, ds.size()), o->eps, o->pgd_steps);
      for (auto& s : report["students"]) {
        const auto& a = s["adversarial"];
        md += fmt::format("| {} ({}) | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {:.1f} |\n", s["model"].get<std::string>(),
                          s["weights"].get<std::string>(), 100 * a["fgsm"]["teacher_fooled"].get<double>(),
                          100 * a["fgsm"]["student_fooling_rate"].get<double>(), 100 * a["fgsm"]["same_wrong_label"].get<double>(),
                          100 * a["pgd"]["teacher_fooled"].get<double>(), 100 * a["pgd"]["student_fooling_rate"].get<double>(),
                          100 * a["pgd"]["same_wrong_label"].get<double>());
      }
    }
    if (!o->out.empty()) {
      md += "\n";
      for (size_t i = 1; i <= students.size(); ++i)
        md += fmt::format("![layer CKA, student {0}](layer_cka_student{0}.png) ![CAMs, student {0}](cams_student{0}.png)\n", i);
    }
    fmt::print("\n{}", md);
    if (!o->out.empty()) {
      std::filesystem::create_directories(o->out);
      write_file_atomic(o->out + "/analysis.json", report.dump(2) + "\n");
      write_file_atomic(o->out + "/report.md", md);
      fmt::print("\nwrote {}/analysis.json and {}/report.md\n", o->out, o->out);
    }
  });
}

}  // namespace kd::cli
