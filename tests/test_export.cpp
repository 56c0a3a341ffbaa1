// ONNX export (deploy/onnx_export.h, issue #31): every exportable model of the zoo is checked by
// ONNX's own checker (python3-onnx, full_check) and run in ONNX Runtime (onnxruntime-node, which
// scripts/setup.sh installs under .deps/ort), whose logits must match kdlab's within 1e-4; BatchNorm
// is folded; the models with ops the exporter does not know yet are refused with the op's name.
// Without python3-onnx or ONNX Runtime the checks that need them say so and are skipped.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "datasets/dataset.h"
#include "datasets/transforms.h"
#include "deploy/onnx_export.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/parallel.h"
#include "nn/layers.h"
#include "nn/models/model.h"
#include "nn/safetensors.h"
#include "test_util.h"

using namespace kd;
namespace fs = std::filesystem;

namespace {

const std::string kOrtModules = std::string(KDLAB_SOURCE_DIR) + "/.deps/ort/node_modules";

bool have_onnx_checker() {
  static const bool ok = std::system("/usr/bin/python3 -c 'import onnx' > /dev/null 2>&1") == 0;
  return ok;
}
bool have_ort() {
  static const bool ok = fs::exists(kOrtModules + "/onnxruntime-node") && std::system("node --version > /dev/null 2>&1") == 0;
  return ok;
}

bool onnx_check(const std::string& path) {
  const std::string cmd = "/usr/bin/python3 -c 'import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), "
                          "full_check=True)' " + path;
  return std::system(cmd.c_str()) == 0;
}

// ONNX Runtime's output for input x, through tools/ort_run.js.
Tensor ort_logits(const std::string& model, const Tensor& x, int64_t classes) {
  const std::string in = model + ".in.bin", out = model + ".out.bin";
  Tensor xc = x.contiguous();
  std::ofstream(in, std::ios::binary).write(reinterpret_cast<const char*>(xc.data<float>()), xc.numel() * 4);
  const Shape& s = x.shape();
  const std::string cmd = fmt::format("NODE_PATH={} node {}/tools/ort_run.js {} {} {},{},{},{} {} 1", kOrtModules,
                                      KDLAB_SOURCE_DIR, model, in, s[0], s[1], s[2], s[3], out);
  REQUIRE(std::system(cmd.c_str()) == 0);
  Tensor y = empty({s[0], classes});
  std::ifstream f(out, std::ios::binary);
  f.read(reinterpret_cast<char*>(y.data<float>()), y.numel() * 4);
  REQUIRE(f.gcount() == y.numel() * 4);
  return y;
}

// A model with BatchNorm statistics that are not the defaults (a few training-mode passes), so
// that folding them is tested.
std::shared_ptr<nn::Classifier> model_with_statistics(const std::string& name, int64_t C, int64_t size) {
  auto model = nn::create_model(name, {10, C, size, 7});
  Generator gen(3);
  NoGradGuard ng;
  model->train();
  for (int k = 0; k < 3; ++k) model->forward(add(mul(randn({8, C, size, size}, gen), 1.5), 0.3));
  model->eval();
  return model;
}

}  // namespace

TEST_CASE("ONNX export: the CNNs of the zoo pass the checker and run in ONNX Runtime with kdlab's logits") {
  set_num_threads(1);
  if (!have_onnx_checker()) MESSAGE("python3-onnx is missing (apt-get install python3-onnx): the checker is skipped");
  if (!have_ort()) MESSAGE("ONNX Runtime is missing (scripts/setup.sh installs onnxruntime-node into .deps/ort): skipped");
  const std::string dir = kdtest::temp_path("onnx");
  fs::create_directories(dir);
  for (const std::string name :
       {"resnet8", "resnet20", "resnet8x4", "wrn_16_2", "vgg8", "mobilenetv2", "shufflenetv1", "shufflenetv2",
        "vit_small_cifar"}) {
    CAPTURE(name);
    auto model = model_with_statistics(name, 3, 32);
    Generator gen(11);
    const Tensor x = randn({5, 3, 32, 32}, gen);  // a batch of 5: the batch dimension is dynamic
    Tensor expected;
    {
      NoGradGuard ng;
      expected = model->forward(x).logits;
    }
    deploy::OnnxExportOptions opt;
    opt.metadata = {{"model", name}};
    const std::string path = dir + "/" + name + ".onnx";
    const deploy::OnnxExportReport rep = deploy::export_onnx(*model, x.slice(0, 0, 2), path, opt);
    CHECK(rep.nodes > 0);
    CHECK((rep.folded_batch_norms > 0) == (name != "vit_small_cifar"));
    // every batch norm that follows a convolution is folded; WRN's pre-activation blocks normalise
    // the sum of a residual, which stays a BatchNormalization
    CHECK((rep.op_counts.count("BatchNormalization") == 0) == (name.rfind("wrn", 0) != 0));
    if (name == "vit_small_cifar") CHECK(rep.op_counts.count("LayerNormalization") == 1);
    CHECK(model->is_training() == false);
    for (const Tensor& p : model->parameters()) CHECK(p.requires_grad());  // restored
    if (have_onnx_checker()) CHECK(onnx_check(path));
    if (have_ort()) {
      const Tensor got = ort_logits(path, x, 10);
      CHECK(max(abs(sub(got, expected))).item() < 1e-4);
    }
  }
}

TEST_CASE("ONNX export: other modalities and sizes, metadata, and what is refused") {
  set_num_threads(1);
  const std::string dir = kdtest::temp_path("onnx2");
  fs::create_directories(dir);
  // a gray model of another size: one input channel, 16 x 16
  auto gray = model_with_statistics("resnet8", 1, 16);
  Generator gen(5);
  const Tensor x = randn({3, 1, 16, 16}, gen);
  deploy::OnnxExportOptions opt;
  opt.metadata = {{"model", "resnet8"}, {"input_modality", "gray"}};
  deploy::export_onnx(*gray, x.slice(0, 0, 2), dir + "/gray.onnx", opt);
  if (have_onnx_checker()) {
    CHECK(onnx_check(dir + "/gray.onnx"));
    const std::string cmd = "/usr/bin/python3 -c 'import onnx, sys; m = onnx.load(sys.argv[1]); "
                            "d = {p.key: p.value for p in m.metadata_props}; "
                            "s = m.graph.input[0].type.tensor_type.shape.dim; "
                            "sys.exit(0 if d[\"input_modality\"] == \"gray\" and s[0].dim_param == \"batch\" and "
                            "s[1].dim_value == 1 and m.opset_import[0].version == 17 and m.ir_version == 8 else 1)' " +
                            dir + "/gray.onnx";
    CHECK(std::system(cmd.c_str()) == 0);
  }
  if (have_ort()) {
    NoGradGuard ng;
    CHECK(max(abs(sub(ort_logits(dir + "/gray.onnx", x, 10), gray->forward(x).logits))).item() < 1e-4);
  }
  // a model whose forward pass runs an op the exporter does not translate: refused, naming the
  // op, and no file is left behind (gelu's tanh form, in a model of our own)
  struct TanhGelu : nn::Classifier {
    std::shared_ptr<nn::Linear> fc;
    TanhGelu() {
      Generator g0(1);
      fc = register_module("fc", std::make_shared<nn::Linear>(16 * 16, 10, g0));
    }
    nn::ModelOutput forward(const Tensor& x) override {
      nn::ModelOutput o;
      o.logits = fc->forward(gelu(x.flatten(1), /*tanh_approximation=*/true));
      return o;
    }
    std::string classifier_name() const override { return "fc"; }
    std::string type_name() const override { return "TanhGelu"; }
  } odd;
  CHECK_THROWS_WITH_SUBSTR(deploy::export_onnx(odd, randn({2, 1, 16, 16}, gen), dir + "/odd.onnx", opt), "tanh");
  CHECK_FALSE(fs::exists(dir + "/odd.onnx"));
  CHECK_THROWS_WITH_SUBSTR(deploy::export_onnx(*gray, randn({3, 16}, gen), dir + "/bad.onnx", opt), "(B, C, H, W)");
}

TEST_CASE("kdlab export: a real teacher checked by ONNX Runtime on real CIFAR-10 images (when the shared data is here)") {
  const std::string weights = kdtest::shared_path("teachers/cifar10_resnet56.safetensors");
  const std::string data = kdtest::shared_path("data/cifar10-jpg.tar.gz");
  if (!kdtest::file_exists(weights) || !kdtest::file_exists(data) || !have_ort()) {
    MESSAGE("the shared teacher, the CIFAR-10 images or ONNX Runtime are missing: skipped");
    return;
  }
  set_num_threads(1);
  const std::string path = kdtest::temp_path("r56") + ".onnx";
  const std::string cmd = fmt::format("{} export --model resnet56 --weights {} --num-classes 10 --out {} > /dev/null",
                                      KDLAB_BIN, weights, path);
  REQUIRE(std::system(cmd.c_str()) == 0);
  data::Dataset test = data::load_dataset("imagefolder", data, "test");
  test = data::subset(test, {0, 1, 2, 3, 4, 5, 6, 7, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000});
  const Tensor x = data::eval_images(test);  // (16, 3, 32, 32), normalised as kdlab does
  auto model = nn::create_model("resnet56", {10, 3, 32, 0});
  model->load_state_dict(nn::load_safetensors(weights).tensors);
  model->eval();
  NoGradGuard ng;
  const Tensor expected = model->forward(x).logits;
  const Tensor got = ort_logits(path, x, 10);
  CHECK(max(abs(sub(got, expected))).item() < 1e-4);
  CHECK(max(abs(sub(argmax(got, 1).to(DType::f32), argmax(expected, 1).to(DType::f32)))).item() == 0);
}

TEST_CASE("kdlab export: refusals name the problem and leave no file") {
  const std::string dir = kdtest::temp_path("export_cli");
  fs::create_directories(dir);
  auto run = [&](const std::string& args, std::string* log) {
    const std::string out = dir + "/log.txt";
    const int rc = std::system((std::string(KDLAB_BIN) + " export " + args + " > " + out + " 2>&1").c_str());
    std::ifstream f(out);
    *log = std::string(std::istreambuf_iterator<char>(f), {});
    return rc;
  };
  std::string log;
  // a model and its weights: random resnet8 weights saved as kdlab saves a run's
  auto model = nn::create_model("resnet8", {10, 3, 32, 0});
  nn::save_safetensors(dir + "/r8.safetensors", model->state_dict(), {{"model", "resnet8"}, {"num_classes", "10"}});
  REQUIRE(run("--model resnet8 --weights " + dir + "/r8.safetensors --out " + dir + "/ok.onnx", &log) == 0);
  CHECK(fs::exists(dir + "/ok.onnx"));
  CHECK(log.find("batch norms folded") != std::string::npos);
  CHECK(run("--model resnet20 --weights " + dir + "/r8.safetensors --out " + dir + "/a.onnx", &log) != 0);
  CHECK(log.find("holds a resnet8 but --model says resnet20") != std::string::npos);
  CHECK(run("--model resnet9 --random-weights --out " + dir + "/b.onnx", &log) != 0);
  CHECK(log.find("resnet9") != std::string::npos);
  CHECK(run("--model resnet8 --weights " + dir + "/missing.safetensors --out " + dir + "/c.onnx", &log) != 0);
  CHECK(log.find("missing.safetensors") != std::string::npos);
  CHECK(run("--model resnet8 --random-weights --format tflite --out " + dir + "/d.onnx", &log) != 0);
  CHECK(log.find("unknown export format 'tflite'") != std::string::npos);
  for (const char* f : {"a.onnx", "b.onnx", "c.onnx", "d.onnx"}) CHECK_FALSE(fs::exists(dir + "/" + f));
}
