// kdlab analyze --teacher M:W --student M:W [--student M:W ...] --dataset D --data-dir DIR
//               [--split test] [--limit N] [--out DIR]
//
// Compares each student with the teacher on the same images (distill/analysis.h): accuracy,
// top-1 agreement, KL and JS between predictions, calibration (ECE), linear and debiased CKA of
// the pooled features, invariance under flip / shift / noise, and cost (parameters, MACs,
// latency, throughput, compression). Give a distilled and an independently trained student to
// see them side by side. Writes DIR/analysis.json and DIR/report.md, and prints the report.
#include <filesystem>
#include <fmt/format.h>
#include <fstream>

#include <nlohmann/json.hpp>

#include "distill/analysis.h"
#include "distill/teacher_cache.h"
#include "distill/train.h"
#include "examples/cli/cli.h"
#include "nn/safetensors.h"

namespace kd::cli {

void register_analyze(CLI::App& app) {
  auto* cmd = app.add_subcommand("analyze", "What did the student learn from its teacher? Agreement, CKA, calibration, invariance, cost");
  struct Opts {
    std::string teacher, dataset, data_dir, split = "test", out;
    std::vector<std::string> students;
    int64_t limit = 0, threads = 0, cka_samples = 2000;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--teacher", o->teacher, "MODEL:WEIGHTS of the teacher")->required();
  cmd->add_option("--student", o->students, "MODEL:WEIGHTS of a student (repeatable)")->required();
  cmd->add_option("--dataset", o->dataset, "data set")->required();
  cmd->add_option("--data-dir", o->data_dir, "folder, archive or file of the data set");
  cmd->add_option("--split", o->split, "train or test")->capture_default_str();
  cmd->add_option("--limit", o->limit, "use the first N images");
  cmd->add_option("--cka-samples", o->cka_samples, "images for the debiased CKA (n x n Gram matrices)")
      ->capture_default_str();
  cmd->add_option("--out", o->out, "folder for analysis.json and report.md");
  cmd->add_option("--threads", o->threads, "threads for the kernels");
  cmd->callback([o] {
    train::set_threads(o->threads);
    data::Dataset ds = data::load_dataset(o->dataset, o->data_dir, o->split);
    if (o->limit > 0 && o->limit < ds.size()) {
      std::vector<int64_t> idx(o->limit);
      for (int64_t i = 0; i < o->limit; ++i) idx[i] = i;
      ds = data::subset(ds, idx);
    }
    const int64_t K = ds.num_classes();
    distill::Guide teacher = distill::load_guide_spec(o->teacher, K, ds);
    std::vector<distill::Guide> students;
    for (const auto& s : o->students) students.push_back(distill::load_guide_spec(s, K, ds));

    fmt::print("predicting on {} images ...\n", ds.size());
    const std::vector<std::string> transforms{"hflip", "shift", "noise"};
    auto describe = [&](distill::Guide& g) {
      analysis::Outputs out = analysis::predict(*g.net, ds, 256);
      nlohmann::json j;
      j["model"] = g.model;
      j["weights"] = g.weights;
      j["accuracy"] = analysis::accuracy(out.logits, ds.labels);
      j["ece"] = analysis::expected_calibration_error(out.logits, ds.labels, 15);
      for (const auto& t : transforms)
        j["invariance"][t] = analysis::top1_agreement(out.logits, analysis::predict(*g.net, ds, 256, t).logits);
      analysis::Cost c = analysis::measure_cost(*g.net, ds.channels(), ds.height());
      j["cost"] = {{"parameters", c.parameters}, {"macs_per_image", c.macs_per_image},
                   {"latency_ms_batch1", c.latency_ms}, {"images_per_s_batch128", c.images_per_s}};
      return std::make_pair(out, j);
    };
    auto [t_out, t_json] = describe(teacher);
    nlohmann::json report = {{"dataset", o->dataset}, {"split", o->split}, {"images", ds.size()}, {"teacher", t_json}};
    report["students"] = nlohmann::json::array();
    const int64_t n_cka = std::min<int64_t>(o->cka_samples, ds.size());
    for (auto& s : students) {
      auto [s_out, s_json] = describe(s);
      s_json["vs_teacher"] = {
          {"top1_agreement", analysis::top1_agreement(t_out.logits, s_out.logits)},
          {"kl_teacher_student", analysis::mean_kl(t_out.logits, s_out.logits)},
          {"js", analysis::mean_js(t_out.logits, s_out.logits)},
          {"linear_cka_pooled", analysis::linear_cka(t_out.pooled, s_out.pooled)},
          {"debiased_cka_pooled", analysis::debiased_linear_cka(t_out.pooled.slice(0, 0, n_cka),
                                                                s_out.pooled.slice(0, 0, n_cka))},
          {"compression_params", (double)t_json["cost"]["parameters"].get<int64_t>() /
                                     std::max<int64_t>(1, s_json["cost"]["parameters"].get<int64_t>())},
          {"compression_macs", (double)t_json["cost"]["macs_per_image"].get<int64_t>() /
                                   std::max<int64_t>(1, s_json["cost"]["macs_per_image"].get<int64_t>())}};
      report["students"].push_back(s_json);
    }

    // the markdown report
    std::string md = fmt::format("# kdlab analyze: {} / {} ({} images)\n\nteacher {} ({})\n\n", o->dataset, o->split,
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
    md += "\n| student | top-1 agreement % | KL(t‖s) | JS | linear CKA (pooled) | debiased CKA (pooled, first " +
          std::to_string(n_cka) + ") | compression (params / MACs) |\n|---|---|---|---|---|---|---|\n";
    for (auto& s : report["students"]) {
      const auto& v = s["vs_teacher"];
      md += fmt::format("| {} ({}) | {:.2f} | {:.4f} | {:.4f} | {:.4f} | {:.4f} | {:.1f}x / {:.1f}x |\n",
                        s["model"].get<std::string>(), s["weights"].get<std::string>(),
                        100 * v["top1_agreement"].get<double>(), v["kl_teacher_student"].get<double>(),
                        v["js"].get<double>(), v["linear_cka_pooled"].get<double>(),
                        v["debiased_cka_pooled"].get<double>(), v["compression_params"].get<double>(),
                        v["compression_macs"].get<double>());
    }
    fmt::print("\n{}", md);
    if (!o->out.empty()) {
      std::filesystem::create_directories(o->out);
      nn::write_file_atomic(o->out + "/analysis.json", report.dump(2) + "\n");
      nn::write_file_atomic(o->out + "/report.md", md);
      fmt::print("\nwrote {}/analysis.json and {}/report.md\n", o->out, o->out);
    }
  });
}

}  // namespace kd::cli
