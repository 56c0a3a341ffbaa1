// distill_run.cpp: see distill_run.h.
#include "distill/distill_run.h"

#include <filesystem>

#include "distill/fusion.h"
#include "distill/output/common.h"
#include "distill/relation/vrm.h"
#include "engine/autograd.h"
#include "engine/npy.h"
#include "engine/ops.h"

namespace fs = std::filesystem;

namespace kd::distill {

Params params_from_json(const nlohmann::json& j) {
  Params p;
  if (j.is_null()) return p;
  KD_CHECK(j.is_object(), "method_params must be a JSON object like {{\"T\": 4}}, got {}", j.dump());
  for (auto it = j.begin(); it != j.end(); ++it) {
    const nlohmann::json& v = it.value();
    if (v.is_string()) p[it.key()] = v.get<std::string>();
    else if (v.is_boolean()) p[it.key()] = v.get<bool>() ? "true" : "false";
    else if (v.is_number_integer()) p[it.key()] = std::to_string(v.get<int64_t>());
    else if (v.is_number()) p[it.key()] = format_number(v.get<double>());
    else throw Error(fmt::format("method parameter {}={} must be a number, a string or true/false", it.key(), v.dump()));
  }
  return p;
}


DistillationLoss::DistillationLoss(const DistillSetup& setup, TeacherCombine combine, int64_t total_epochs)
    : guides_(setup.guides), guide_view_(setup.guide_view), num_teachers_(setup.num_teachers), cache_(setup.cache),
      distiller_(setup.distiller), combine_(std::move(combine)), total_epochs_(total_epochs) {
  guide_view_.resize(guides_.size(), -1);
}

const Tensor& DistillationLoss::guide_input(size_t g, const data::Batch& batch) const {
  const int v = guide_view_[g];
  if (v < 0) return batch.images;
  KD_CHECK(v < (int)batch.views.size(), "the batch lacks the paired view {} of guide {} ({})", v, g, guides_[g].model);
  return batch.views[v];  // the same crops, the guide's modality
}

train::Loss DistillationLoss::compute(const nn::ModelOutput& student, const data::Batch& batch, int64_t epoch) {
  const size_t M = num_teachers_;
  nn::ModelOutput teacher;
  std::vector<Tensor> teacher_logits, assistants;  // each (B, K)
  if (cache_) {
    for (size_t g = 0; g < M; ++g) teacher_logits.push_back(cache_->logits((int64_t)g, batch));  // on exactly this view
    for (int64_t g = (int64_t)M; g < cache_->num_guides(); ++g) assistants.push_back(cache_->logits(g, batch));
    if (cache_->has_pooled()) teacher.pooled = cache_->pooled(batch);  // (B, D): RKD, PKT, CC
  } else {
    NoGradGuard ng;  // the guides are constants of the loss
    teacher = guides_[0].net->forward(guide_input(0, batch));  // logits and features of the first teacher
    teacher_logits.push_back(teacher.logits);
    for (size_t g = 1; g < M; ++g) teacher_logits.push_back(guides_[g].net->forward(guide_input(g, batch)).logits);
    for (size_t g = M; g < guides_.size(); ++g) assistants.push_back(guides_[g].net->forward(guide_input(g, batch)).logits);
  }
  // one teacher: its logits; several: combined per sample (mean, weighted, confidence)
  teacher.logits = combine_teacher_logits(teacher_logits, batch.labels, combine_);  // (B, K)
  BatchInfo info;
  info.labels = batch.labels;
  info.indices = batch.indices;
  info.epoch = epoch + 1;  // mdistiller counts epochs from 1
  info.batch_index = batch.batch_index;
  info.total_epochs = total_epochs_;
  info.assistant_logits = assistants;  // DGKD's needs().assistants (empty without --assistant)
  return distill_loss(*distiller_, student, teacher, info);  // w_ce * CE + the method's terms
}

train::Run prepare_distill_run(const train::TrainConfig& cfg, const std::string& out_dir,
                               const std::string& command_line, DistillSetup& setup) {
  KD_CHECK(!cfg.method.empty(), "no distillation method: give --method (kdlab distill --list shows them)");
  KD_CHECK(!cfg.teacher.empty() || !cfg.teachers.empty(),
           "no teacher model: give --teacher MODEL (kdlab info --list), or --teacher MODEL:WEIGHTS once per teacher");
  KD_CHECK(cfg.teacher.empty() || !cfg.teacher_weights.empty(),
           "no teacher weights: give --teacher-weights FILE.safetensors (a run's model_best.safetensors, or PyTorch "
           "weights converted with tools/pth_to_safetensors.py)");
  KD_CHECK(!cfg.teacher_weights.empty() || cfg.teacher.empty(),
           "teacher_weights is set but no teacher model; give --teacher MODEL");
  train::Run run = train::prepare_run(cfg, out_dir, command_line);
  const int64_t K = cfg.num_classes > 0 ? cfg.num_classes : run.train_set.num_classes();

  // 1. the guides: the teachers, then assistants (largest first), frozen and in eval mode. They see
  // the teacher's modality (cfg.teacher_input; a MODEL:WEIGHTS:MODALITY spec its own), the
  // student its own (cfg.input, set on run's data sets by prepare_run).
  setup.guides.clear();
  const data::Dataset teacher_view = data::with_modality(
      run.train_set, data::parse_modality(cfg.teacher_input.empty() ? cfg.input : cfg.teacher_input));
  if (!cfg.teacher.empty()) setup.guides.push_back(load_guide(cfg.teacher, cfg.teacher_weights, K, teacher_view));
  for (const std::string& t : cfg.teachers) setup.guides.push_back(load_guide_spec(t, K, teacher_view));
  setup.num_teachers = setup.guides.size();
  const TeacherCombine combine{cfg.teacher_combine, cfg.teacher_weights_mix};
  check_teacher_combine(combine, setup.num_teachers);
  for (const std::string& a : cfg.assistants) setup.guides.push_back(load_guide_spec(a, K, teacher_view));
  // paired views: one per modality a guide sees that the student does not (none with the teacher
  // cache, which serves the guides' logits computed on their own views)
  setup.guide_view.clear();
  for (const Guide& g : setup.guides) {
    int view = -1;
    if (g.input != run.train_set.modality && !cfg.teacher_cache) {
      for (size_t k = 0; k < run.views.size(); ++k)
        if (run.views[k] == g.input) view = (int)k;
      if (view < 0) {
        view = (int)run.views.size();
        run.views.push_back(g.input);
      }
    }
    setup.guide_view.push_back(view);
  }
  nlohmann::json teacher_accuracies = nlohmann::json::array();
  for (size_t g = 0; g < setup.num_teachers; ++g) {
    train::EvalResult ev =
        train::evaluate(*setup.guides[g].net, data::with_modality(run.test_set, setup.guides[g].input), 256);
    if (g == 0) setup.teacher_test_accuracy = ev.accuracy;
    teacher_accuracies.push_back(ev.accuracy);
    fmt::print("teacher {} ({}): test accuracy {:.2f}%\n", setup.guides[g].model, setup.guides[g].weights,
               100.0 * ev.accuracy);
  }

  // 2. the method, given sample outputs of both networks (shapes for helper modules)
  DistillerContext ctx;
  ctx.num_classes = K;
  ctx.seed = cfg.seed;
  ctx.student_model = run.model;            // for methods that read or adapt the networks (CAT-KD)
  ctx.teacher_model = setup.guides[0].net;  // the first teacher
  {
    NoGradGuard ng;
    // 64 images drawn at random (seed 0; image folders are sorted by class): shapes for every
    // method, and statistics for those that take some (LONDON's OFD margins)
    const data::Dataset drawn = data::random_subset(run.train_set, std::min<int64_t>(64, run.train_set.size()), 0);
    Tensor sample = data::eval_images(drawn);  // (64, C, H, W) in the student's modality
    run.model->eval();
    ctx.student_sample = run.model->forward(sample);
    run.model->train();
    ctx.teacher_sample = setup.guides[0].net->forward(data::eval_images(data::with_modality(drawn, setup.guides[0].input)));
  }
  setup.distiller = create_distiller(cfg.method, params_from_json(cfg.method_params), ctx);
  Distiller& distiller = *setup.distiller;
  // what the method declared it needs beyond the two networks' outputs (a fusion: the union)
  const TeacherNeeds needs = distiller.needs();
  KD_CHECK(cfg.assistants.empty() || needs.assistants,
           "assistants are guides of dgkd only; remove --assistant or use --method dgkd");
  KD_CHECK(setup.num_teachers == 1 || !needs.assistants,
           "{} distils one teacher and its assistants; give one --teacher and the others as --assistant MODEL:WEIGHTS",
           cfg.method);
  for (const Artifact& a : distiller.artifacts()) {  // what the method built for itself (WKD-L's cost matrix)
    fs::create_directories(out_dir);
    save_npy(out_dir + "/" + a.name + ".npy", a.value);
    fmt::print("{}, saved to {}/{}.npy\n", a.note, out_dir, a.name);
  }

  // 3. the teacher cache (logits-only methods)
  const data::TransformConfig tc = train::training_transform(cfg, run.train_set);
  if (cfg.teacher_cache) {
    KD_CHECK(!distiller.needs().virtual_views,
             "{} runs the teacher on a strongly augmented virtual view of every image, which the teacher cache cannot "
             "serve; run without teacher_cache",
             cfg.method);
    KD_CHECK(distiller.needs().cacheable(),
             "{} reads the teacher's feature maps, which the teacher cache does not store (it stores the logits and "
             "the pooled feature); run without teacher_cache",
             cfg.method);  // for a fusion: any feature component (needs() is the union)
    const std::string dir = cfg.teacher_cache_dir.empty() ? out_dir + "/teacher_cache" : cfg.teacher_cache_dir;
    const int64_t views = cfg.augment ? cfg.teacher_cache_views : 1;
    setup.cache = std::make_shared<TeacherCache>(
        TeacherCache::build_or_load(setup.guides, run.train_set, tc, views, /*seed=*/0, dir, /*batch_size=*/256,
                                    /*with_pooled=*/distiller.needs().pooled));
    std::shared_ptr<TeacherCache> cache = setup.cache;
    run.choose_aug = [cache](int64_t index, Generator& gen) { return cache->choose(index, gen); };
  }

  // 4. the loss of one batch
  run.loss = std::make_shared<DistillationLoss>(setup, combine, cfg.epochs);

  // VRM: every batch also gets a virtual (strongly augmented) view, run through both networks
  if (needs.virtual_views) {
    KD_CHECK(setup.guides.size() == 1, "{} reads the virtual views of one teacher; give a single --teacher",
             cfg.method);
    KD_CHECK(setup.guide_view[0] < 0, "{} runs the teacher on the student's virtual views, so both must see the same "
             "modality (the teacher sees {}, the student {})", cfg.method, setup.guides[0].input.str(),
             run.train_set.modality.str());
    attach_virtual_views(run, setup.guides[0].net, setup.distiller, distiller.virtual_transform(run.train_set),
                         cfg.epochs);
  }

  // 5. the helpers train and are checkpointed with the student
  run.extra_params = distiller.named_parameters();
  if (!distiller.state_dict().empty())  // helpers (regressors, projectors) are saved beside "model"
    run.extra_modules.push_back({"distiller", setup.distiller.get()});
  nlohmann::json params = nlohmann::json::object();
  for (auto& [k, v] : distiller.params()) params[k] = v;
  nlohmann::json guides_json = nlohmann::json::array();
  for (const Guide& g : setup.guides)
    guides_json.push_back({{"model", g.model}, {"weights", g.weights}, {"input", g.input.str()}});
  run.extra_record["distillation"] = {{"method", cfg.method},
                                      {"params", params},
                                      {"guides", guides_json},
                                      {"teacher_test_accuracy", setup.teacher_test_accuracy},
                                      {"teacher_cache", cfg.teacher_cache}};
  if (setup.num_teachers > 1)
    run.extra_record["distillation"]["teachers"] = {{"count", setup.num_teachers},
                                                    {"combine", combine.rule},
                                                    {"mix", combine.mix},
                                                    {"test_accuracies", teacher_accuracies}};
  if (setup.cache)
    run.extra_record["distillation"]["teacher_cache_info"] = {{"views", setup.cache->num_views()},
                                                              {"built_now", setup.cache->built_now()},
                                                              {"build_seconds", setup.cache->build_seconds()}};
  return run;
}

train::RunSummary run_baseline(const train::TrainConfig& config, const std::string& out_dir,
                               const std::string& command_line, bool resume) {
  train::TrainConfig cfg = config;
  KD_CHECK(cfg.method_params.is_null() || cfg.method_params.empty(),
           "the baseline (plain cross-entropy) has no method parameters, but got {}; give recipe keys only, or a "
           "parameter to one method of a sweep as --set METHOD.key=value", cfg.method_params.dump());
  cfg.method.clear();  // recorded as plain training
  train::Run run = train::prepare_run(cfg, out_dir, command_line);
  fmt::print("{}\n{}\nmodel {} ({} parameters), cross-entropy, {} epochs, batch {}, run directory {}\n",
             run.train_set.summary(), run.test_set.summary(), cfg.model, run.model->num_parameters(), cfg.epochs,
             cfg.batch_size, out_dir);
  return train::run_training(run, resume);
}

train::RunSummary run_distillation(const train::TrainConfig& cfg, const std::string& out_dir,
                                   const std::string& command_line, bool resume) {
  DistillSetup setup;
  train::Run run = prepare_distill_run(cfg, out_dir, command_line, setup);
  std::string teachers;
  for (size_t g = 0; g < setup.num_teachers; ++g) teachers += (g ? "+" : "") + setup.guides[g].model;
  if (setup.num_teachers > 1) teachers += " (" + cfg.teacher_combine + ")";
  fmt::print("{}\n{}\nstudent {} ({} parameters) <- teacher {} by {}, {} epochs, batch {}, run directory {}\n",
             run.train_set.summary(), run.test_set.summary(), cfg.model, run.model->num_parameters(), teachers,
             cfg.method, cfg.epochs, cfg.batch_size, out_dir);
  return train::run_training(run, resume);
}

train::RunSummary run_method(train::TrainConfig cfg, const std::string& out_dir, const std::string& command_line,
                             bool resume) {
  train::set_threads(cfg.threads);
  if (cfg.method.empty()) cfg.method = "baseline";
  // a fusion ("dkd+at") trains with the distillation epoch loop; a registry row names its regime
  const RegimeRunner regime = is_fusion_name(cfg.method) ? nullptr : registry_entry(cfg.method).regime;
  if (regime) return regime(cfg, out_dir, command_line, resume);  // its own regime (baseline, acd_u)
  return run_distillation(cfg, out_dir, command_line, resume);     // the epoch loop with a Distiller
}

}  // namespace kd::distill
