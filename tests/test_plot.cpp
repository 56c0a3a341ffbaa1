// Plots (analysis/plot.h, drawn with cairo): the output format by extension, the chart font,
// the Canvas primitives read back from PNG files (decoded with stb_image, independently of
// cairo) and from SVG files (checked to be well-formed SVG with the expected elements), ticks,
// reading metrics.jsonl, the curves of `kdlab plot` (each run's colour where its curves go, the
// one train-dashed / test-solid convention), the bar chart (one-seed values without "±", error
// bars only over seeds, the cut axis marked), the analysis figures drawn on the Canvas (CKA heat
// map, CAM grid), and the errors for bad input.
#include <cairo-ft.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "analysis/analysis.h"
#include "analysis/plot.h"
#include "datasets/dataset.h"
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
    for (int y = std::max(y0, 0); y < std::min(y1, h); ++y)
      for (int x = std::max(x0, 0); x < std::min(x1, w); ++x) n += c ? at(x, y) == *c : !(at(x, y) == kWhite);
    return n;
  }
  int count(std::optional<Color> c = std::nullopt) const { return count(0, 0, w, h, c); }
  // the mean row of the pixels equal to c in the columns [x0, x1); NaN when there are none
  double mean_row(Color c, int x0, int x1) const {
    double sum = 0, n = 0;
    for (int y = 0; y < h; ++y)
      for (int x = x0; x < x1; ++x)
        if (at(x, y) == c) sum += y, n += 1;
    return n > 0 ? sum / n : std::nan("");
  }
};

// A PNG decoded by stb_image (not by cairo, which wrote it).
static Image load_png(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[8] = {};
  f.read(magic, 8);
  REQUIRE_MESSAGE(std::string(magic, 8) == "\x89PNG\r\n\x1a\n", path << " does not start with the PNG signature");
  Image im;
  int channels = 0;
  uint8_t* data = stbi_load(path.c_str(), &im.w, &im.h, &channels, 3);
  REQUIRE_MESSAGE(data != nullptr, "stb_image cannot decode " << path);
  im.rgb.assign(data, data + (size_t)im.w * im.h * 3);
  stbi_image_free(data);
  return im;
}

static std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot open " << path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

static int occurrences(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// A small XML well-formedness check: every element closed in order, one root. Returns the
// count of each element name; fails the test on a mismatch.
static std::map<std::string, int> check_xml(const std::string& text) {
  std::map<std::string, int> elements;
  std::vector<std::string> open;
  int roots = 0;
  size_t i = 0;
  while ((i = text.find('<', i)) != std::string::npos) {
    if (text.compare(i, 4, "<!--") == 0) {
      i = text.find("-->", i);
      REQUIRE_MESSAGE(i != std::string::npos, "an unclosed comment");
      continue;
    }
    const size_t end = text.find('>', i);
    REQUIRE_MESSAGE(end != std::string::npos, "an unclosed tag at byte " << i);
    const std::string tag = text.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag[0] == '?' || tag[0] == '!') continue;  // the XML declaration, a DOCTYPE
    if (tag[0] == '/') {
      const std::string name = tag.substr(1, tag.find_first_of(" \t\n") - 1);
      REQUIRE_MESSAGE(!open.empty(), "</" << name << "> closes nothing");
      REQUIRE_MESSAGE(open.back() == name, "</" << name << "> closes <" << open.back() << ">");
      open.pop_back();
      continue;
    }
    const std::string name = tag.substr(0, tag.find_first_of(" \t\n/"));
    ++elements[name];
    if (open.empty()) ++roots;
    if (tag.back() != '/') open.push_back(name);
  }
  CHECK_MESSAGE(open.empty(), open.size() << " elements left open");
  CHECK(roots == 1);
  return elements;
}

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

// ---------------------------------------------------------------- formats and font

TEST_CASE("image_format: .png and .svg by the extension, anything else an error naming both") {
  CHECK(image_format("curves.png") == ImageFormat::png);
  CHECK(image_format("runs/a.b/curves.PNG") == ImageFormat::png);
  CHECK(image_format("curves.svg") == ImageFormat::svg);
  CHECK(image_format("/tmp/x/Curves.Svg") == ImageFormat::svg);
  for (const std::string bad : {"curves.jpg", "curves", "curves.png.bak", "dir.png/curves"}) {
    INFO(bad);
    CHECK_ERROR_CONTAINS(image_format(bad), "cannot tell the image format of '" + bad + "'");
    CHECK_ERROR_CONTAINS(image_format(bad), ".png (pixels) or .svg (vectors)");
  }

  // every writer refuses before drawing, and leaves no file behind
  const std::string root = fresh_dir("formats");
  const std::string run = write_run(root + "/run", 3, 0.3);
  CHECK_ERROR_CONTAINS(plot_runs({run}, root + "/curves.pdf"), "'.pdf'");
  CHECK_ERROR_CONTAINS(bar_chart(root + "/bars.jpeg", "", "", {{"a", 1, 0, 1, {}}}), "'.jpeg'");
  CHECK_ERROR_CONTAINS(write_chart(root + "/p.gif", {Panel{}}), "'.gif'");
  Canvas cv(10, 10);
  CHECK_ERROR_CONTAINS(cv.save(root + "/c.bmp"), "name the file .png (pixels) or .svg (vectors)");
  for (const auto& e : fs::directory_iterator(root)) CHECK_MESSAGE(e.path().filename() == "run", e.path());
}

TEST_CASE("font: DejaVu Sans through cairo, metrics that grow with the text and the size") {
  // the face fontconfig resolves for the chart font is DejaVu Sans (fonts-dejavu-core)
  cairo_surface_t* s = cairo_image_surface_create(CAIRO_FORMAT_A8, 1, 1);
  cairo_t* cr = cairo_create(s);
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  cairo_scaled_font_t* font = cairo_get_scaled_font(cr);
  FT_Face face = cairo_ft_scaled_font_lock_face(font);
  REQUIRE(face != nullptr);
  const std::string family = face->family_name ? face->family_name : "";
  cairo_ft_scaled_font_unlock_face(font);
  cairo_destroy(cr);
  cairo_surface_destroy(s);
  CHECK_MESSAGE(family == "DejaVu Sans",
                "the chart font resolved to '" << family << "': install fonts-dejavu-core (scripts/setup.sh)");

  CHECK(text_width("", 14) == 0);
  CHECK(text_width("A", 14) > 0);
  CHECK(text_width("AB", 14) > text_width("A", 14));
  CHECK(text_width("test accuracy", 28) == doctest::Approx(2 * text_width("test accuracy", 14)).epsilon(0.1));
  CHECK(text_height(14) > 14);  // ascent + descent exceed the em
  CHECK(text_height(14) < 20);
  CHECK(text_height(28) == doctest::Approx(2 * text_height(14)).epsilon(0.1));
  CHECK(text_width("±", 14) > 0);
}

// ---------------------------------------------------------------- the canvas

TEST_CASE("canvas: what is drawn lands where it is drawn, in its colour (PNG read back)") {
  const std::string root = fresh_dir("canvas");
  const Color red{214, 39, 40}, blue{31, 119, 180};
  Canvas cv(120, 80);
  CHECK(cv.width() == 120);
  cv.fill_rect(10, 10, 20, 15, blue);             // a box on whole pixels: exactly its pixels
  cv.polyline({5, 115}, {50, 50}, red, 2);        // a line on a pixel boundary: rows 49 and 50
  cv.polyline({5, 115}, {70, 70}, red, 2, true);  // the same, dashed: 7 drawn, 4 skipped
  cv.image(60, 5, {255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0}, 2, 2, 5);  // 2 x 2 pixels, 5 x 5 each
  cv.save(root + "/c.png");
  CHECK_FALSE(fs::exists(root + "/c.png.tmp"));
  Image im = load_png(root + "/c.png");
  REQUIRE(im.w == 120);
  REQUIRE(im.h == 80);

  CHECK(im.count(10, 10, 30, 25, blue) == 20 * 15);
  CHECK(im.count(blue) == 20 * 15);
  CHECK(im.count(5, 49, 115, 51, red) == 2 * 110);
  CHECK(im.count(0, 40, 120, 48) == 0);  // nothing above the solid line
  // the dashed line: dashes of 7 pixels every 11, from x = 5
  int dashes = 0, on = 0;
  for (int x = 0; x < 120; ++x) {
    const bool now = im.at(x, 69) == red;
    dashes += now && !(x > 0 && im.at(x - 1, 69) == red);
    on += now;
  }
  CHECK(dashes == 10);  // 110 pixels: 10 periods of 11
  CHECK(on == 70);
  CHECK(im.at(5, 69) == red);
  CHECK(im.at(13, 69) == kWhite);  // in the first gap (x 12..15)
  // the image, nearest neighbour: each source pixel a sharp 5 x 5 block
  CHECK(im.count(60, 5, 65, 10, Color{255, 0, 0}) == 25);
  CHECK(im.count(65, 5, 70, 10, Color{0, 255, 0}) == 25);
  CHECK(im.count(60, 10, 65, 15, Color{0, 0, 255}) == 25);
  CHECK(im.count(65, 10, 70, 15, Color{255, 255, 0}) == 25);
}

TEST_CASE("canvas: NaN breaks a line, a lone point is a dot, text stays in its box") {
  const std::string root = fresh_dir("canvas2");
  const Color red{214, 39, 40};
  Canvas cv(200, 100);
  const double nan = std::nan("");
  cv.polyline({10, 40, nan, 60, 90}, {20, 20, 20, 20, 20}, red, 2);
  cv.polyline({150}, {20}, red, 2);
  cv.text(10, 50, "Hello ±", kBlack, 14);
  const double tw = text_width("Hello ±", 14), th = text_height(14);
  cv.text_up(150, 95, "up", kBlack, 14);
  cv.save(root + "/t.png");
  Image im = load_png(root + "/t.png");
  CHECK(im.count(41, 0, 59, 40) == 0);  // the gap at the NaN
  CHECK(im.count(10, 19, 40, 21, red) == 60);
  CHECK(im.count(60, 19, 90, 21, red) == 60);
  CHECK(im.count(146, 16, 155, 25, red) >= 9);  // the dot
  // the text's ink lies within its box, which starts at (10, 50)
  const int ink = im.count(0, 45, 140, 75);
  CHECK(ink > 50);
  CHECK(im.count(10, 50, 10 + (int)std::ceil(tw) + 1, 50 + (int)std::ceil(th)) == ink);
  // rotated text: a box as wide as the text is tall, ending at y = 95 and rising from there
  const int up_ink = im.count(140, 60, 200, 100);
  CHECK(up_ink > 20);
  CHECK(im.count(150, 95 - (int)std::ceil(text_width("up", 14)) - 1, 150 + (int)std::ceil(th), 96) == up_ink);

  CHECK_ERROR_CONTAINS(Canvas(0, 10), "must be in 1..16384");
  CHECK_ERROR_CONTAINS(cv.polyline({1, 2}, {1}, red), "2 x values but 1 y values");
  CHECK_ERROR_CONTAINS(cv.image(0, 0, {1, 2, 3}, 2, 2), "3 bytes for a 2 x 2 RGB image (expected 12)");
}

TEST_CASE("canvas: an SVG is well-formed SVG of vectors, the dashes as stroke-dasharray") {
  const std::string root = fresh_dir("svg");
  Canvas cv(120, 80);
  cv.fill_rect(10, 10, 20, 15, palette(0));
  cv.polyline({5, 115}, {50, 50}, palette(1), 2);
  cv.polyline({5, 115}, {70, 70}, palette(1), 2, true);
  cv.text(10, 30, "kdlab", kBlack, 14);
  cv.image(60, 5, {255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0}, 2, 2, 5);
  cv.save(root + "/c.svg");
  const std::string svg = read_text(root + "/c.svg");
  CHECK(svg.rfind("<?xml", 0) == 0);
  std::map<std::string, int> el = check_xml(svg);
  CHECK(el["svg"] == 1);
  CHECK(svg.find("width=\"120px\"") != std::string::npos);
  CHECK(svg.find("height=\"80px\"") != std::string::npos);
  CHECK(svg.find("viewBox=\"0 0 120 80\"") != std::string::npos);
  CHECK(el["path"] >= 3);   // the two lines, the box, the glyphs' outlines
  CHECK(el["image"] == 1);  // the embedded picture
  CHECK(el["use"] >= 5);    // one per character of "kdlab"
  CHECK(occurrences(svg, "stroke-dasharray") == 1);
}

// ---------------------------------------------------------------- ticks

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
  // no train_acc (ACD-U logs none): read, as NaN, and the accuracy panel draws only the test curve
  d = write("no_train_acc", R"({"epoch":1,"train_loss":2,"test_loss":2.1,"test_acc":0.3})");
  RunMetrics no_train_acc = read_metrics(d);
  CHECK(std::isnan(no_train_acc.train_acc.at(0)));
  CHECK(no_train_acc.test_acc.at(0) == doctest::Approx(0.3));
  plot_runs({d}, root + "/no_train_acc.png");
  CHECK(load_png(root + "/no_train_acc.png").w == 1280);
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

TEST_CASE("write_chart: each series drawn in its colour where its values put it") {
  const std::string root = fresh_dir("chart");
  // a rising line, a falling line and a flat one across x = 0..10; no legend, so every pixel of
  // these colours belongs to a curve
  Panel p{"lines", "x", "y", {}, {}};
  std::vector<double> x, up, down, flat;
  for (int i = 0; i <= 10; ++i) x.push_back(i), up.push_back(i), down.push_back(10 - i), flat.push_back(2);
  p.series = {{x, up, palette(0), LineStyle::solid},
              {x, down, palette(1), LineStyle::dashed},
              {x, flat, palette(2), LineStyle::solid}};
  write_chart(root + "/lines.png", {p}, 600, 400);
  Image im = load_png(root + "/lines.png");
  REQUIRE(im.w == 600);
  REQUIRE(im.h == 400);
  CHECK(im.at(0, 0) == kWhite);
  // the rising line is low (a large row) on the left and high on the right; the falling one the
  // reverse; the flat one (y = 2) stays on one band of rows, below where the two cross (y = 5)
  const double up_left = im.mean_row(palette(0), 0, 250), up_right = im.mean_row(palette(0), 350, 600);
  const double down_left = im.mean_row(palette(1), 0, 250), down_right = im.mean_row(palette(1), 350, 600);
  CHECK(up_left > up_right + 100);
  CHECK(down_left < down_right - 100);
  CHECK(up_left == doctest::Approx(down_right).epsilon(0.05));  // symmetric about x = 5
  const double flat_left = im.mean_row(palette(2), 0, 250), flat_right = im.mean_row(palette(2), 350, 600);
  CHECK(flat_left == doctest::Approx(flat_right).epsilon(0.01));
  CHECK(flat_left > (up_left + up_right) / 2);  // y = 2 is below the middle (y = 5)
  int flat_rows = 0;
  for (int y = 0; y < im.h; ++y) flat_rows += im.count(0, y, 600, y + 1, palette(2)) > 200;
  CHECK(flat_rows >= 1);  // a long horizontal run of its colour
  CHECK(flat_rows <= 3);
  // a dashed line draws fewer of its pixels than a solid one of the same length
  CHECK(im.count(palette(1)) < 0.8 * im.count(palette(0)));

  // any number of panels, an empty one included; and the errors
  write_chart(root + "/three.png", {p, p, Panel{}}, 900, 300);
  Image three = load_png(root + "/three.png");
  CHECK(three.w == 900);
  CHECK(three.count(0, 0, 300, 300, palette(0)) > 50);
  CHECK(three.count(300, 0, 600, 300, palette(1)) > 20);
  CHECK(three.count(600, 0, 900, 300, palette(0)) == 0);
  CHECK(three.count(600, 0, 900, 300) > 0);  // its axes
  p.series[0].y.pop_back();
  CHECK_ERROR_CONTAINS(write_chart(root + "/bad.png", {p}, 400, 300),
                       "series 0 of panel 'lines' has 11 x values but 10 y values");
  CHECK_ERROR_CONTAINS(write_chart(root + "/bad.png", {}, 400, 300), "no panels");
}

TEST_CASE("plot_runs: a PNG of the requested size, each run's colour on its curves in both panels") {
  const std::string root = fresh_dir("plot");
  std::vector<std::string> runs = {write_run(root + "/teacher", 30, 0.2), write_run(root + "/student_ce", 30, 0.1),
                                   write_run(root + "/student_kd", 20, 0.15, true)};
  const std::string out = root + "/figs/curves.png";  // the folder is created
  plot_runs(runs, out, {}, 1200, 500);
  CHECK_FALSE(fs::exists(out + ".tmp"));
  Image im = load_png(out);
  CHECK(im.w == 1200);
  CHECK(im.h == 500);
  CHECK(im.at(0, 0) == kWhite);
  // each half is one panel; its plotting area (above the legend) holds every run's colour
  for (int panel = 0; panel < 2; ++panel) {
    const int x0 = panel * 600;
    for (int r = 0; r < 3; ++r) {
      INFO("panel " << panel << " run " << r);
      CHECK(im.count(x0 + 100, 40, x0 + 580, 300, palette(r)) > 100);
    }
  }
  CHECK(im.count(palette(3)) == 0);  // no fourth run
  // the loss falls: run 0's loss pixels sit higher (smaller rows) on the left than on the right
  CHECK(im.mean_row(palette(0), 100, 250) < im.mean_row(palette(0), 400, 580));
  // the accuracy rises: the reverse in the right panel
  CHECK(im.mean_row(palette(0), 700, 850) > im.mean_row(palette(0), 1000, 1180));

  // one epoch only (a dot), two runs of the same base name, other sizes; an SVG
  const std::string a = write_run(root + "/kd/seed0", 1, 0.2), b = write_run(root + "/ce/seed0", 2, 0.5);
  plot_runs({a, b}, root + "/small.png", {}, 640, 300);
  Image small = load_png(root + "/small.png");
  CHECK(small.w == 640);
  CHECK(small.h == 300);
  CHECK(small.count(0, 0, 320, 200, palette(0)) > 9);  // the single point is drawn
  plot_runs({a}, root + "/labelled.svg", {"my label"}, 2000, 900);
  const std::string svg = read_text(root + "/labelled.svg");
  CHECK(check_xml(svg)["svg"] == 1);
  CHECK(svg.find("width=\"2000px\"") != std::string::npos);

  // many runs (a report over a whole experiment): the legend grows the figure, never fails
  std::vector<std::string> many;
  for (int r = 0; r < 60; ++r) many.push_back(write_run(root + "/many/run" + std::to_string(r), 3, 0.1 + 0.01 * r));
  plot_runs(many, root + "/many.png", {}, 640, 560);
  Image tall = load_png(root + "/many.png");
  CHECK(tall.w == 640);
  CHECK(tall.h > 560);
  CHECK(tall.count(0, tall.h - 80, 640, tall.h) > 0);  // the legend reaches the bottom
}

TEST_CASE("plot_runs: train dashed and test solid in both panels, and the legend says so") {
  CHECK(series_style(Split::train) == LineStyle::dashed);
  CHECK(series_style(Split::test) == LineStyle::solid);

  const std::string root = fresh_dir("styles");
  std::vector<RunMetrics> runs = {read_metrics(write_run(root + "/a", 5, 0.2)),
                                  read_metrics(write_run(root + "/b", 5, 0.4))};
  std::vector<Panel> panels = run_panels(runs);
  REQUIRE(panels.size() == 2);
  CHECK(panels[0].ylabel == "loss");
  CHECK(panels[1].ylabel == "accuracy (%)");
  auto percent = [](std::vector<double> v) {
    for (double& x : v) x *= 100;
    return v;
  };
  // every curve is identified by its values: which run, which split; its style must follow the split
  for (int k = 0; k < 2; ++k) {
    int train = 0, test = 0;
    for (const Series& se : panels[k].series) {
      for (size_t r = 0; r < runs.size(); ++r) {
        const auto& train_y = k == 0 ? runs[r].train_loss : percent(runs[r].train_acc);
        const auto& test_y = k == 0 ? runs[r].test_loss : percent(runs[r].test_acc);
        if (se.y == train_y) {
          ++train;
          CHECK(se.style == LineStyle::dashed);
          CHECK(se.color == palette((int)r));
        }
        if (se.y == test_y) {
          ++test;
          CHECK(se.style == LineStyle::solid);
          CHECK(se.color == palette((int)r));
        }
      }
    }
    INFO("panel " << k);
    CHECK(train == 2);
    CHECK(test == 2);
    CHECK(panels[k].series.size() == 4);
    // the legend: the runs as colour swatches, then the same key in both panels
    const auto& legend = panels[k].legend;
    REQUIRE(legend.size() == 4);
    CHECK(legend[0].label.rfind("a", 0) == 0);
    CHECK_FALSE(legend[0].line.has_value());
    CHECK(legend[0].color == palette(0));
    CHECK(legend[2].label == "train (dashed)");
    CHECK(legend[2].line == LineStyle::dashed);
    CHECK(legend[2].new_row);  // the key has a row of its own
    CHECK(legend[3].label == "test (solid)");
    CHECK(legend[3].line == LineStyle::solid);
  }
  CHECK(panels[1].legend[1].label == fmt::format("b (best test {:.2f}%)", 100 * runs[1].test_acc.back()));

  // and the drawing follows: in the SVG, one dashed path per train curve (two per run) plus the
  // two "train (dashed)" legend keys
  plot_runs({root + "/a"}, root + "/one.svg");
  CHECK(occurrences(read_text(root + "/one.svg"), "stroke-dasharray") == 2 + 2);
  plot_runs({root + "/a", root + "/b"}, root + "/two.svg");
  CHECK(occurrences(read_text(root + "/two.svg"), "stroke-dasharray") == 4 + 2);
}

// ---------------------------------------------------------------- bars

TEST_CASE("bar_chart: bars in their colours, error bars only over several seeds") {
  const std::string root = fresh_dir("bars");
  std::vector<Bar> bars = {{"CE", 71.2, 0.3, 3, {}},
                           {"KD", 72.9, 0.25, 3, {}},
                           {"DKD", 73.6, 0.4, 3, {}},
                           {"CRD", 73.1, 0.1, 3, Color{10, 10, 200}}};
  bar_chart(root + "/bars.png", "ResNet8 students on CIFAR-10", "test accuracy (%)", bars, 800, 500);
  Image im = load_png(root + "/bars.png");
  CHECK(im.w == 800);
  CHECK(im.h == 500);
  for (int i = 0; i < 3; ++i) CHECK(im.count(palette(i)) > 500);
  CHECK(im.count(Color{10, 10, 200}) > 500);
  CHECK(im.count(palette(3)) == 0);  // its colour was replaced
  // the bars run left to right in order: the mean column of each colour
  auto mean_col = [&](Color c) {
    double sum = 0, n = 0;
    for (int y = 0; y < im.h; ++y)
      for (int x = 0; x < im.w; ++x)
        if (im.at(x, y) == c) sum += x, n += 1;
    return sum / n;
  };
  CHECK(mean_col(palette(0)) < mean_col(palette(1)));
  CHECK(mean_col(palette(1)) < mean_col(palette(2)));
  CHECK(mean_col(palette(2)) < mean_col(Color{10, 10, 200}));
  CHECK(im.count(kBlack) > 40);  // the error bars (only they are pure black)

  // the same means from one seed each: no error bars, and the values print without "±"
  std::vector<Bar> one = bars;
  for (Bar& b : one) b.n = 1, b.std = 0;
  bar_chart(root + "/one_seed.png", "one seed", "test accuracy (%)", one, 800, 500);
  CHECK(load_png(root + "/one_seed.png").count(kBlack) == 0);
  CHECK(bar_value_label(one[1]) == "72.90");
  CHECK(bar_value_label(one[1], 1) == "72.9");
  CHECK(bar_value_label(bars[1]) == "72.90 ± 0.25");
  for (const Bar& b : one) CHECK(bar_value_label(b).find("±") == std::string::npos);

  // long labels turn upright; small figures; an SVG
  bars[0].label = "a rather long method name";
  bar_chart(root + "/long.png", "", "", bars, 400, 300, 0.0, 1);
  CHECK(load_png(root + "/long.png").h == 300);
  bar_chart(root + "/one.png", "one", "loss", {{"x", 0.5, 0, 1, {}}}, 300, 200);
  CHECK(load_png(root + "/one.png").w == 300);
  bar_chart(root + "/bars.svg", "svg", "top-1 %", bars);
  CHECK(check_xml(read_text(root + "/bars.svg"))["svg"] == 1);

  CHECK_ERROR_CONTAINS(bar_chart(root + "/x.png", "", "", {}), "no bars");
  CHECK_ERROR_CONTAINS(bar_chart(root + "/x.png", "", "", {{"bad", 1, -1, 2, {}}}), "std not negative");
  CHECK_ERROR_CONTAINS(bar_chart(root + "/x.png", "", "", {{"one", 1, 0.5, 1, {}}}),
                       "bar 'one' is over n = 1 values with std 0.5");
  CHECK_ERROR_CONTAINS(bar_chart(root + "/x.png", "", "", {{"a", 1, 0, 1, {}}}, 400, 300, 5.0),
                       "above the highest bar");
  CHECK_FALSE(fs::exists(root + "/x.png"));
}

TEST_CASE("bar_chart: an axis that does not start at 0 is said and marked") {
  // accuracies a point or two apart: the axis zooms in, and says where it starts
  const std::vector<Bar> bars = {{"baseline", 82.90, 0, 1, {}}, {"kd", 84.30, 0, 1, {}}, {"dkd", 85.35, 0, 1, {}}};
  const BarAxis zoomed = bar_axis(bars);
  CHECK(zoomed.lo > 0);
  CHECK(zoomed.lo < 82.90);
  CHECK(zoomed.hi > 85.35);
  CHECK(bar_axis_note(zoomed, "top-1 %") ==
        fmt::format("axis starts at {}%, not at 0", format_tick(zoomed.lo, zoomed.step)));
  CHECK(bar_axis_note(zoomed, "accuracy") ==
        fmt::format("axis starts at {}, not at 0", format_tick(zoomed.lo, zoomed.step)));
  // bars near 0, or a y_min of 0, or negative values: the axis starts at (or below) 0, no note
  CHECK(bar_axis(bars, 0.0).lo == 0);
  CHECK(bar_axis_note(bar_axis(bars, 0.0), "top-1 %").empty());
  CHECK(bar_axis_note(bar_axis({{"a", 0.2, 0, 1, {}}, {"b", 0.5, 0, 1, {}}}), "loss").empty());
  CHECK(bar_axis({{"a", -1, 0, 1, {}}, {"b", 2, 0, 1, {}}}).lo < -1);
  CHECK(bar_axis({{"a", 9.4, 0, 2, {}}, {"b", 9.4, 0, 1, {}}}).lo == 0);  // all equal: nothing to zoom in on

  // the picture: a break mark cuts every bar of the zoomed chart (its colour runs in two pieces
  // down the bar's middle column); the bars of the chart from 0 are whole
  const std::string root = fresh_dir("cut");
  bar_chart(root + "/cut.png", "cut", "top-1 %", bars, 800, 500);
  bar_chart(root + "/zero.png", "zero", "top-1 %", bars, 800, 500, 0.0);
  auto pieces_in_middle_column = [](const Image& im, Color c) {
    std::vector<int> per_column(im.w);
    for (int x = 0; x < im.w; ++x) per_column[x] = im.count(x, 0, x + 1, im.h, c);
    const int most = *std::max_element(per_column.begin(), per_column.end());
    int first = -1, last = -1;  // the bar's columns
    for (int x = 0; x < im.w; ++x)
      if (per_column[x] > most / 2) first = first < 0 ? x : first, last = x;
    const int mid = (first + last) / 2;
    int pieces = 0;
    for (int y = 0; y < im.h; ++y) pieces += im.at(mid, y) == c && !(y > 0 && im.at(mid, y - 1) == c);
    return pieces;
  };
  Image cut = load_png(root + "/cut.png"), zero = load_png(root + "/zero.png");
  for (int i = 0; i < 3; ++i) {
    INFO("bar " << i);
    CHECK(pieces_in_middle_column(cut, palette(i)) == 2);
    CHECK(pieces_in_middle_column(zero, palette(i)) == 1);
  }
  // the cut chart's bars differ visibly in height; from 0 they are nearly equal
  CHECK(cut.count(palette(2)) > 2 * cut.count(palette(0)));
  CHECK(zero.count(palette(2)) < 1.1 * zero.count(palette(0)));
}

// ---------------------------------------------------------------- the analysis figures

TEST_CASE("analysis figures on the Canvas: the CKA heat map and the CAM grid") {
  const std::string root = fresh_dir("analysis_figures");
  auto near = [](Color a, Color b) {
    return std::abs(a.r - b.r) <= 1 && std::abs(a.g - b.g) <= 1 && std::abs(a.b - b.b) <= 1;
  };
  auto count_near = [&](const Image& im, Color c) {
    int n = 0;
    for (int y = 0; y < im.h; ++y)
      for (int x = 0; x < im.w; ++x) n += near(im.at(x, y), c);
    return n;
  };

  // the heat map: each cell filled with its value's colour (white at 0 to dark blue at 1), rows
  // top to bottom, columns left to right
  const Tensor m = from_vector(std::vector<float>{0.f, 1.f, 0.5f, 1.f, 0.f, 0.25f}, {2, 3});
  analysis::heatmap_png(root + "/heat.png", m, {"f1", "f2"}, {"g1", "g2", "g3"}, "linear CKA");
  Image heat = load_png(root + "/heat.png");
  const Color one{30, 75, 175}, half{142, 165, 215}, quarter{198, 210, 235};  // 255 - (225, 180, 80) v
  CHECK(count_near(heat, one) > 2 * 2500);  // two cells of 56 x 56 pixels, less the printed value
  CHECK(count_near(heat, one) < 2 * 3136 + 100);
  CHECK(count_near(heat, half) > 2500);
  CHECK(count_near(heat, quarter) > 2500);
  CHECK(heat.mean_row(half, 0, heat.w) < heat.mean_row(quarter, 0, heat.w));  // row 0 above row 1
  CHECK(heat.mean_row(one, 0, heat.w) ==
        doctest::Approx((heat.mean_row(half, 0, heat.w) + heat.mean_row(quarter, 0, heat.w)) / 2).epsilon(0.02));
  analysis::heatmap_png(root + "/heat.svg", m, {"f1", "f2"}, {"g1", "g2", "g3"}, "linear CKA");
  CHECK(check_xml(read_text(root + "/heat.svg"))["svg"] == 1);
  CHECK_ERROR_CONTAINS(analysis::heatmap_png(root + "/bad.png", m, {"f1"}, {"g1", "g2", "g3"}, ""),
                       "a 2 x 3 matrix with 1 row and 3 column labels");

  // the CAM grid: two grey 4 x 4 images, each drawn 24 times larger; the teacher's map 0 (the
  // image unchanged), the student's map 1 (red over the image: 0.6 red + 0.4 grey)
  data::Dataset ds;
  ds.images = from_vector(std::vector<uint8_t>(2 * 4 * 4, 100), {2, 1, 4, 4});
  ds.labels = from_vector(std::vector<int64_t>{0, 1}, {2});
  ds.class_names = {"a", "b"};
  analysis::cam_grid_png(root + "/cams.png", ds, zeros({2, 4, 4}), full({2, 4, 4}, 1.0), 8);
  Image cams = load_png(root + "/cams.png");
  CHECK(cams.w == 3 * (96 + 6) + 6);
  CHECK(cams.h == 30 + 2 * (96 + 6) + 6);
  const Color grey{100, 100, 100}, red{193, 40, 40};
  CHECK(cams.count(grey) == 4 * 96 * 96);  // the images and the teacher's (empty) overlays, sharp
  CHECK(count_near(cams, red) == 2 * 96 * 96);
  CHECK(cams.count(2 * (96 + 6) + 6, 30, 2 * (96 + 6) + 6 + 96, 30 + 96, grey) == 0);  // the student's column is red
  analysis::cam_grid_png(root + "/cams.svg", ds, zeros({2, 4, 4}), full({2, 4, 4}, 1.0), 8);
  CHECK(check_xml(read_text(root + "/cams.svg"))["image"] == 6);
}
