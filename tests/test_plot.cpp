// Plots: the bitmap font, the Canvas primitives, ticks, reading metrics.jsonl, the curves of
// `kdlab plot` on synthetic runs (decoded back with stb_image and checked panel by panel), the
// bar chart, and the errors for missing or broken metrics files.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "analysis/plot.h"
#include "analysis/plot_font.h"
#include "test_util.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image.h>  // the implementation is compiled in datasets/image_folder.cpp
#pragma GCC diagnostic pop

using namespace kd;
using namespace kd::plot;
namespace fs = std::filesystem;

#define CHECK_ERROR_CONTAINS(expr, text) CHECK_THROWS_WITH_SUBSTR(expr, std::string(text).c_str())

// ---------------------------------------------------------------- helpers

// A decoded RGB image.
struct Image {
  int w = 0, h = 0;
  std::vector<uint8_t> rgb;
  Color at(int x, int y) const {
    const uint8_t* p = &rgb[((size_t)y * w + x) * 3];
    return {p[0], p[1], p[2]};
  }
  // pixels in [x0, x1) x [y0, y1) equal to c (or, with c unset, not white)
  int count(int x0, int y0, int x1, int y1, std::optional<Color> c = std::nullopt) const {
    int n = 0;
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) n += c ? at(x, y) == *c : !(at(x, y) == kWhite);
    return n;
  }
};

static Image load_png(const std::string& path) {
  Image im;
  int channels = 0;
  uint8_t* data = stbi_load(path.c_str(), &im.w, &im.h, &channels, 3);
  REQUIRE_MESSAGE(data != nullptr, "stb_image cannot decode " << path);
  im.rgb.assign(data, data + (size_t)im.w * im.h * 3);
  stbi_image_free(data);
  return im;
}

static Image from_canvas(const Canvas& cv) { return {cv.width(), cv.height(), cv.rgb()}; }

// A run directory with a metrics.jsonl of `epochs` lines shaped like the training loop's.
static std::string write_run(const std::string& dir, int epochs, double speed, bool with_parts = false) {
  fs::create_directories(dir);
  std::ofstream f(dir + "/metrics.jsonl");
  double best = 0;
  for (int e = 1; e <= epochs; ++e) {
    const double train_loss = 2.3 * std::exp(-speed * e) + 0.05;
    const double test_loss = train_loss * 1.2 + 0.1;
    const double test_acc = 0.9 - 0.8 * std::exp(-speed * e);
    best = std::max(best, test_acc);
    nlohmann::json j = {{"epoch", e},
                        {"train_loss", train_loss},
                        {"train_acc", test_acc + 0.05},
                        {"test_loss", test_loss},
                        {"test_acc", test_acc},
                        {"best_acc", best},
                        {"lr", 0.1},
                        {"time_s", 1.5},
                        {"images_per_s", 1000.0}};
    if (with_parts) {
      j["loss_ce"] = train_loss * 0.5;
      j["loss_kd"] = train_loss * 0.5;
    }
    f << j.dump() << "\n";
  }
  return dir;
}

static std::string fresh_dir(const std::string& name) {
  std::string d = kdtest::temp_path(name);
  fs::create_directories(d);
  return d;
}

// ---------------------------------------------------------------- the font

TEST_CASE("font: printable ASCII in order, well-formed, every glyph distinct") {
  REQUIRE(kFontGlyphs >= 95);
  std::set<std::string> bitmaps;
  for (int i = 0; i < kFontGlyphs; ++i) {
    const Glyph& g = kFont[i];
    if (i < 95) CHECK(g.code == (uint32_t)(32 + i));
    std::string bits;
    int ink = 0;
    for (int r = 0; r < kGlyphHeight; ++r) {
      if (g.rows[r] == nullptr) {
        bits += ".....";
        continue;
      }
      INFO("glyph " << g.code << " row " << r);
      REQUIRE(std::string(g.rows[r]).size() == (size_t)kGlyphWidth);
      for (int c = 0; c < kGlyphWidth; ++c) {
        CHECK((g.rows[r][c] == '#' || g.rows[r][c] == '.'));
        ink += glyph_ink(g, c, r);
      }
      bits += g.rows[r];
    }
    if (g.code == ' ')
      CHECK(ink == 0);
    else
      CHECK_MESSAGE(ink > 0, "glyph " << g.code << " is blank");
    CHECK_MESSAGE(bitmaps.insert(bits).second, "glyph " << g.code << " looks like an earlier one");
  }
  CHECK(glyph_for('A').code == 'A');
  CHECK(glyph_for(0x00B1).code == 0x00B1);  // ±
  CHECK(glyph_for(0x4E2D).code == '?');     // not in the font
  CHECK(glyph_for(7).code == '?');
}

TEST_CASE("text: widths, distinct renderings, UTF-8, rotated text") {
  CHECK(text_width("") == 0);
  CHECK(text_width("A") == kGlyphWidth);
  CHECK(text_width("AB") == kGlyphAdvance + kGlyphWidth);
  CHECK(text_width("AB", 3) == 3 * (kGlyphAdvance + kGlyphWidth));
  CHECK(text_width("a±b") == text_width("abc"));  // ± is one character (two UTF-8 bytes)
  CHECK(text_height(2) == 2 * kGlyphHeight);

  // every printable character draws a different picture, exactly inside its box
  std::set<std::vector<uint8_t>> pictures;
  for (int c = 33; c <= 126; ++c) {
    Canvas cv(12, 14);
    cv.text(2, 2, std::string(1, (char)c), kBlack);
    Image im = from_canvas(cv);
    CHECK(im.count(0, 0, 12, 14) == im.count(2, 2, 2 + kGlyphWidth, 2 + kGlyphHeight));
    CHECK(im.count(0, 0, 12, 14) > 0);
    CHECK(pictures.insert(cv.rgb()).second);
  }

  // scale 2: every ink pixel becomes a 2 x 2 block, so four times the ink
  Canvas c1(40, 20), c2(80, 40);
  c1.text(0, 0, "kd7", kBlack, 1);
  c2.text(0, 0, "kd7", kBlack, 2);
  CHECK(from_canvas(c2).count(0, 0, 80, 40) == 4 * from_canvas(c1).count(0, 0, 40, 20));

  // rotated: the same ink, in a box as tall as the text is wide, ending at the given bottom
  Canvas up(20, 40);
  up.text_up(5, 30, "kd7", kBlack);
  Image ui = from_canvas(up);
  CHECK(ui.count(0, 0, 20, 40) == from_canvas(c1).count(0, 0, 40, 20));
  CHECK(ui.count(5, 30 - text_width("kd7"), 5 + kGlyphHeight, 30) == ui.count(0, 0, 20, 40));

  // malformed UTF-8 draws '?' rather than failing
  Canvas q(20, 12), qq(20, 12);
  q.text(0, 0, std::string("\xff"), kBlack);
  qq.text(0, 0, "?", kBlack);
  CHECK(q.rgb() == qq.rgb());
}

// ---------------------------------------------------------------- primitives

TEST_CASE("canvas: lines, dashes, rectangles, clipping") {
  const Color red{214, 39, 40};
  Canvas cv(100, 60);
  CHECK(cv.pixel(0, 0) == kWhite);
  // a horizontal line on a pixel boundary: exactly two full rows of the colour
  cv.line(10, 20, 90, 20, red, 2);
  Image im = from_canvas(cv);
  CHECK(im.count(12, 19, 88, 21, red) == 2 * 76);
  CHECK(im.count(0, 0, 100, 18) == 0);
  CHECK(im.count(0, 23, 100, 60) == 0);

  // dashed: colour and gaps alternate along the line
  Canvas d(100, 20);
  d.polyline({5, 95}, {10, 10}, red, 2, true, 8, 5);
  Image di = from_canvas(d);
  int runs = 0;
  bool in_dash = false;
  for (int x = 0; x < 100; ++x) {
    const bool on = di.at(x, 9) == red;
    if (on && !in_dash) ++runs;
    in_dash = on;
  }
  CHECK(runs == 7);  // 90 pixels with a period of 13: seven dashes
  CHECK(di.count(0, 0, 100, 20, red) < 2 * 90);

  // a NaN splits a polyline; an isolated point is drawn as a dot
  Canvas n(100, 40);
  const double nan = std::nan("");
  n.polyline({10, 30, nan, 70, 90}, {20, 20, 20, 20, 20}, red);
  Image ni = from_canvas(n);
  CHECK(ni.count(40, 0, 60, 40) == 0);
  CHECK(ni.count(12, 19, 28, 21, red) > 0);
  CHECK(ni.count(72, 19, 88, 21, red) > 0);
  Canvas dot(20, 20);
  dot.polyline({10}, {10}, red);
  CHECK(from_canvas(dot).count(0, 0, 20, 20, red) >= 9);

  // rectangles, and drawing off the canvas is clipped rather than an error
  Canvas r(30, 30);
  r.rect(5, 5, 10, 10, kBlack);
  Image ri = from_canvas(r);
  CHECK(ri.count(0, 0, 30, 30, kBlack) == 36);
  CHECK(ri.at(10, 10) == kWhite);
  r.fill_rect(-10, -10, 100, 5, kBlack);
  r.line(-50, -50, 200, 200, kBlack, 2);
  r.text(25, 25, "clipped", kBlack, 3);
  CHECK(r.pixel(0, 0) == kBlack);
  CHECK_THROWS_WITH_SUBSTR(r.pixel(30, 0), "outside the 30 x 30 canvas");
  CHECK_THROWS_WITH_SUBSTR(Canvas(0, 10), "must be in 1..16384");
  CHECK_THROWS_WITH_SUBSTR(r.polyline({1, 2}, {1}, red), "2 x values but 1 y values");

  // anti-aliasing: a diagonal line blends its edge pixels
  Canvas aa(40, 40);
  aa.line(0, 0, 40, 30, kBlack, 2);
  Image ai = from_canvas(aa);
  int grey = 0;
  for (int y = 0; y < 40; ++y)
    for (int x = 0; x < 40; ++x) {
      Color c = ai.at(x, y);
      grey += c.r > 0 && c.r < 255;
    }
  CHECK(grey > 20);
}

TEST_CASE("ticks: nice steps and their labels") {
  CHECK(nice_ticks(0, 1) == std::vector<double>{0, 0.2, 0.4, 0.6000000000000001, 0.8, 1});
  auto t = nice_ticks(1, 15);
  CHECK(t.front() == 2);
  CHECK(t.back() == 14);
  CHECK(t.size() == 7);
  t = nice_ticks(0.031, 0.0745, 5);
  CHECK(t.size() >= 3);
  CHECK(t.front() >= 0.031);
  CHECK(t.back() <= 0.0745);
  for (double v : nice_ticks(-3.2, 7.9)) CHECK(v == std::round(v));  // step 2 -> whole numbers
  CHECK(format_tick(0.25, 0.05) == "0.25");
  CHECK(format_tick(0.6000000000000001, 0.2) == "0.6");
  CHECK(format_tick(10, 5) == "10");
  CHECK(format_tick(-1e-17, 0.5) == "0.0");
  CHECK(format_tick(1500, 500) == "1500");
  CHECK_THROWS_WITH_SUBSTR(nice_ticks(1, 1), "empty or not finite");
}

// ---------------------------------------------------------------- metrics

TEST_CASE("read_metrics: columns, label, parts, resumed epochs, nulls") {
  const std::string dir = write_run(fresh_dir("runs") + "/resnet8_kd", 4, 0.5, true);
  RunMetrics m = read_metrics(dir);
  CHECK(m.label == "resnet8_kd");
  CHECK(m.path == dir + "/metrics.jsonl");
  CHECK(m.epoch == std::vector<double>{1, 2, 3, 4});
  CHECK(m.train_loss.size() == 4);
  CHECK(m.train_loss[0] == doctest::Approx(2.3 * std::exp(-0.5) + 0.05));
  CHECK(m.lr[3] == 0.1);
  REQUIRE(m.loss_parts.count("loss_kd"));
  CHECK(m.loss_parts["loss_kd"].size() == 4);
  CHECK(read_metrics(dir + "/").label == "resnet8_kd");               // trailing slash
  CHECK(read_metrics(dir + "/metrics.jsonl").label == "resnet8_kd");  // the file itself
  CHECK(read_metrics(dir, "mine").label == "mine");

  // a resumed run that wrote epoch 2 again, a blank line, a NaN loss (JSON null), and keys
  // this reader does not know
  const std::string r = fresh_dir("resumed");
  {
    std::ofstream f(r + "/metrics.jsonl");
    f << R"({"epoch":1,"train_loss":2,"train_acc":0.1,"test_loss":2.1,"test_acc":0.1,"note":"x"})"
      << "\n";
    f << R"({"epoch":2,"train_loss":1.5,"train_acc":0.2,"test_loss":1.6,"test_acc":0.2})"
      << "\n\n";
    f << R"({"epoch":2,"train_loss":1.4,"train_acc":0.3,"test_loss":null,"test_acc":0.3})"
      << "\n";
  }
  m = read_metrics(r);
  CHECK(m.epoch == std::vector<double>{1, 2});
  CHECK(m.train_loss[1] == 1.4);
  CHECK(std::isnan(m.test_loss[1]));
  CHECK(std::isnan(m.best_acc[0]));  // optional and absent
}

TEST_CASE("read_metrics and plot_runs: errors name the problem") {
  const std::string root = fresh_dir("bad");
  CHECK_ERROR_CONTAINS(read_metrics(root + "/nope"), "the run directory '" + root + "/nope' does not exist");
  fs::create_directories(root + "/empty_run");
  CHECK_ERROR_CONTAINS(read_metrics(root + "/empty_run"), "no metrics.jsonl in '" + root + "/empty_run'");

  auto write = [&](const std::string& name, const std::string& text) {
    fs::create_directories(root + "/" + name);
    std::ofstream(root + "/" + name + "/metrics.jsonl") << text;
    return root + "/" + name;
  };
  const std::string good = R"({"epoch":1,"train_loss":2,"train_acc":0.1,"test_loss":2.1,"test_acc":0.1})";
  std::string d = write("broken", good + "\n" + good + "\n" + "{\"epoch\": 3, \"train_loss\": \n");
  CHECK_ERROR_CONTAINS(read_metrics(d), d + "/metrics.jsonl:3: not valid JSON");
  d = write("array", good + "\n[1, 2]\n");
  CHECK_ERROR_CONTAINS(read_metrics(d), "metrics.jsonl:2: a array where each line");
  d = write("missing", R"({"epoch":1,"train_loss":2,"train_acc":0.1,"test_acc":0.1})");
  CHECK_ERROR_CONTAINS(read_metrics(d), "metrics.jsonl:1: no key 'test_loss'");
  // no train_acc (ACD-U logs none): read, as NaN
  d = write("no_train_acc", R"({"epoch":1,"train_loss":2,"test_loss":2.1,"test_acc":0.3})");
  RunMetrics no_train_acc = read_metrics(d);
  CHECK(std::isnan(no_train_acc.train_acc.at(0)));
  CHECK(no_train_acc.test_acc.at(0) == doctest::Approx(0.3));
  CHECK_NOTHROW(plot_runs({d}, root + "/no_train_acc.png"));
  d = write("text", R"({"epoch":1,"train_loss":"high","train_acc":0.1,"test_loss":2.1,"test_acc":0.1})");
  CHECK_ERROR_CONTAINS(read_metrics(d), "metrics.jsonl:1: 'train_loss' is \"high\" where a number was expected");
  d = write("fraction", R"({"epoch":1.5,"train_loss":2,"train_acc":0.1,"test_loss":2.1,"test_acc":0.1})");
  CHECK_ERROR_CONTAINS(read_metrics(d), "'epoch' is 1.5 where a whole number was expected");
  d = write("nothing", "\n\n");
  CHECK_ERROR_CONTAINS(read_metrics(d), "holds no epochs yet");

  CHECK_THROWS_WITH_SUBSTR(plot_runs({}, root + "/x.png"), "no run directories given");
  const std::string ok = write_run(root + "/ok", 3, 0.3);
  CHECK_THROWS_WITH_SUBSTR(plot_runs({ok}, root + "/x.png", {"a", "b"}), "2 labels for 1 runs");
  CHECK_ERROR_CONTAINS(plot_runs({ok, root + "/empty_run"}, root + "/x.png"), "no metrics.jsonl in");
  CHECK_FALSE(fs::exists(root + "/x.png"));
  CHECK_THROWS_WITH_SUBSTR(plot_runs({ok}, root + "/x.png", {}, 60, 40), "too small");
}

// ---------------------------------------------------------------- the curves

TEST_CASE("plot_runs: two panels, every run in its colour, a PNG of the requested size") {
  const std::string root = fresh_dir("plot");
  std::vector<std::string> runs = {write_run(root + "/teacher", 30, 0.2), write_run(root + "/student_ce", 30, 0.1),
                                   write_run(root + "/student_kd", 20, 0.15, true)};
  const std::string out = root + "/figs/curves.png";  // the folder is created
  plot_runs(runs, out, {}, 1200, 500);
  REQUIRE(fs::exists(out));
  CHECK_FALSE(fs::exists(out + ".tmp"));
  Image im = load_png(out);
  CHECK(im.w == 1200);
  CHECK(im.h == 500);
  CHECK(im.at(0, 0) == kWhite);  // white background
  // each half is one panel: ink in its middle (curves, grid), and every run's colour in it
  for (int panel = 0; panel < 2; ++panel) {
    const int x0 = panel * 600;
    CHECK(im.count(x0 + 150, 100, x0 + 550, 300) > 1000);
    for (int r = 0; r < 3; ++r) {
      INFO("panel " << panel << " run " << r);
      CHECK(im.count(x0, 0, x0 + 600, 500, palette(r)) > 100);
    }
  }
  CHECK(im.count(0, 0, 1200, 500, palette(3)) == 0);  // no fourth run

  // one epoch only, caller's labels, two runs of the same base name, other sizes
  const std::string a = write_run(root + "/kd/seed0", 1, 0.2), b = write_run(root + "/ce/seed0", 2, 0.2);
  plot_runs({a, b}, root + "/small.png", {}, 640, 300);
  Image small = load_png(root + "/small.png");
  CHECK(small.w == 640);
  CHECK(small.h == 300);
  CHECK(small.count(0, 0, 320, 300, palette(0)) > 0);  // the single point is drawn
  plot_runs({a}, root + "/labelled.png", {"my label"}, 2000, 900);
  CHECK(load_png(root + "/labelled.png").w == 2000);

  // many runs (a report over a whole experiment): the legend grows the figure, never fails
  std::vector<std::string> many;
  for (int r = 0; r < 24; ++r) many.push_back(write_run(root + "/many/run" + std::to_string(r), 3, 0.1 + 0.01 * r));
  plot_runs(many, root + "/many.png", {}, 640, 560);
  Image tall = load_png(root + "/many.png");
  CHECK(tall.w == 640);
  CHECK(tall.h > 560);
  CHECK(tall.count(0, 0, 320, tall.h, palette(5)) > 0);  // the sixth run's curve is drawn
}

TEST_CASE("write_png: any number of panels, series of any kind") {
  const std::string root = fresh_dir("panels");
  Panel p{"sin and cos", "x", "y", {}};
  std::vector<double> x, s, c;
  for (int i = 0; i <= 100; ++i) {
    x.push_back(i * 0.0628);
    s.push_back(std::sin(i * 0.0628));
    c.push_back(std::cos(i * 0.0628));
  }
  p.series.push_back({"sin", x, s, palette(4), false});
  p.series.push_back({"cos", x, c, palette(5), true});
  Panel empty{"", "", "", {}};  // no data at all still draws axes
  write_png(root + "/three.png", {p, p, empty}, 900, 300);
  Image im = load_png(root + "/three.png");
  CHECK(im.w == 900);
  CHECK(im.count(0, 0, 300, 300, palette(4)) > 50);
  CHECK(im.count(300, 0, 600, 300, palette(5)) > 20);
  CHECK(im.count(600, 0, 900, 300) > 0);
  p.series[0].y.pop_back();
  CHECK_THROWS_WITH_SUBSTR(write_png(root + "/bad.png", {p}, 400, 300), "has 101 x values but 100 y values");
  CHECK_THROWS_WITH_SUBSTR(write_png(root + "/bad.png", {}, 400, 300), "no panels");
}

// ---------------------------------------------------------------- bars

TEST_CASE("bar_chart: bars in their colours with error bars and values") {
  const std::string root = fresh_dir("bars");
  std::vector<Bar> bars = {
      {"CE", 71.2, 0.3, {}}, {"KD", 72.9, 0.25, {}}, {"DKD", 73.6, 0.4, {}}, {"CRD", 73.1, 0.1, Color{10, 10, 200}}};
  bar_chart(root + "/bars.png", "ResNet8 students on CIFAR-10", "test accuracy (%)", bars, 800, 500);
  Image im = load_png(root + "/bars.png");
  CHECK(im.w == 800);
  CHECK(im.h == 500);
  for (int i = 0; i < 3; ++i) CHECK(im.count(0, 0, 800, 500, palette(i)) > 500);
  CHECK(im.count(0, 0, 800, 500, Color{10, 10, 200}) > 500);
  CHECK(im.count(0, 0, 800, 500, palette(3)) == 0);  // its colour was replaced
  CHECK(im.count(0, 0, 800, 500, kBlack) > 20);      // error bars

  // long labels turn upright; values near zero start the axis at zero; small figures
  bars[0].label = "a rather long method name";
  bar_chart(root + "/long.png", "", "", bars, 400, 300, 0.0, 1);
  CHECK(load_png(root + "/long.png").h == 300);
  bar_chart(root + "/one.png", "one", "loss", {{"x", 0.5, 0, {}}}, 300, 200);
  CHECK(load_png(root + "/one.png").w == 300);

  CHECK_THROWS_WITH_SUBSTR(bar_chart(root + "/x.png", "", "", {}), "no bars");
  CHECK_THROWS_WITH_SUBSTR(bar_chart(root + "/x.png", "", "", {{"bad", 1, -1, {}}}), "std not negative");
  CHECK_THROWS_WITH_SUBSTR(bar_chart(root + "/x.png", "", "", {{"a", 1, 0, {}}}, 400, 300, 5.0),
                           "above the highest bar");
}
