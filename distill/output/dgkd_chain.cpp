// dgkd_chain.cpp: see dgkd_chain.h.
#include "distill/output/dgkd_chain.h"

#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "distill/distill_run.h"

namespace fs = std::filesystem;

namespace kd::distill {

std::vector<DgkdLink> dgkd_chain_links(const DgkdChain& chain) {
  KD_CHECK(!chain.assistants.empty(), "a DGKD chain needs at least one assistant: give --assistants A1,A2,...");
  std::vector<DgkdLink> links;
  std::vector<std::string> done;  // "model:weights" of the assistants before this link
  for (size_t i = 0; i < chain.assistants.size(); ++i) {
    const std::string dir = fmt::format("{}/{}_{}", chain.out_dir, i + 1, chain.assistants[i]);
    links.push_back({chain.assistants[i], dir, done});
    done.push_back(chain.assistants[i] + ":" + dir + "/model_last.safetensors");
  }
  if (!chain.student.empty())  // the student guides no one
    links.push_back({chain.student, fmt::format("{}/student_{}", chain.out_dir, chain.student), done});
  return links;
}

train::RunSummary run_dgkd_chain(const DgkdChain& chain, const std::string& command_line) {
  train::RunSummary last;
  for (const DgkdLink& link : dgkd_chain_links(chain)) {
    train::TrainConfig cfg = chain.base;
    cfg.method = "dgkd";
    cfg.model = link.model;
    cfg.assistants = link.guides;
    // drop_num can be at most guides - 1 (the teacher and the assistants so far)
    const int64_t guides = 1 + (int64_t)link.guides.size();
    const int64_t drop = cfg.method_params.value("drop_num", (int64_t)1);
    cfg.method_params["drop_num"] = std::min<int64_t>(drop, guides - 1);
    if (fs::exists(link.dir + "/model_last.safetensors")) {
      fmt::print("== {}: already trained ({}/model_last.safetensors)\n", link.model, link.dir);
      continue;
    }
    std::vector<std::string> names{cfg.teacher};
    for (const std::string& g : link.guides) names.push_back(g.substr(0, g.find(':')));
    fmt::print("== {} guided by {}\n", link.model, fmt::join(names, " + "));
    last = run_distillation(cfg, link.dir, command_line, fs::exists(link.dir + "/checkpoint.safetensors"));
    if (last.interrupted) return last;
    fmt::print("{}: last test accuracy {:.4f}, best {:.4f}\n", link.model, last.last_accuracy, last.best_accuracy);
  }
  return last;
}

}  // namespace kd::distill
