// plot.h: line charts and bar charts drawn into an RGB buffer and written as PNG, with no
// plotting library: `kdlab plot RUN_DIR...` draws the loss and accuracy curves of runs, and the
// report command draws mean ± std bars over seeds.
//
// Three layers, each usable alone:
//   Canvas        an RGB image with drawing primitives: anti-aliased lines of any thickness,
//                 dashed polylines, rectangles, and text in the bitmap font of plot_font.h
//                 (horizontal, or rotated to read upwards for a y-axis label).
//   write_png     a figure of Panels side by side; a Panel is a titled x-y chart with labelled
//                 axes, "nice" tick values, a light grid, its Series as lines, and a legend
//                 below the axes (outside the data, so it never hides a curve).
//   plot_runs     reads each run's metrics.jsonl and draws two panels: loss vs epoch (train
//                 solid, test dashed) and accuracy vs epoch (test solid, train dashed), one
//                 colour per run.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kd::plot {

struct Color {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Color&) const = default;
};
constexpr Color kWhite{255, 255, 255};
constexpr Color kBlack{0, 0, 0};

// The i-th colour of a 10-colour palette of well-separated hues (matplotlib's "tab10"); cycles.
Color palette(int i);

// ---------------------------------------------------------------- the canvas

class Canvas {
 public:
  Canvas(int width, int height, Color background = kWhite);
  int width() const { return width_; }
  int height() const { return height_; }
  Color pixel(int x, int y) const;                          // (x, y) must be inside
  const std::vector<uint8_t>& rgb() const { return rgb_; }  // (height, width, 3), row-major

  // Pixels outside the canvas are ignored by every drawing call.
  void set(int x, int y, Color c);
  void blend(int x, int y, Color c, double alpha);  // alpha in [0, 1] over what is there
  void fill_rect(int x, int y, int w, int h, Color c);
  void rect(int x, int y, int w, int h, Color c, int thickness = 1);  // outline, inside the box
  // A straight line of the given thickness with round ends, anti-aliased: each pixel is covered
  // by how far its centre lies from the segment (full within thickness/2, fading over 1 pixel).
  void line(double x0, double y0, double x1, double y1, Color c, double thickness = 2);
  // Lines through the points; dashed: `dash` pixels drawn, `gap` skipped, the pattern running on
  // across the corners so that short segments still look dashed.
  void polyline(const std::vector<double>& xs, const std::vector<double>& ys, Color c, double thickness = 2,
                bool dashed = false, double dash = 8, double gap = 5);
  void disc(double cx, double cy, double radius, Color c);

  // Text with its top-left corner at (x, y); each font pixel becomes a scale x scale block.
  // The string is UTF-8; characters outside the font draw as '?'.
  void text(int x, int y, const std::string& s, Color c, int scale = 1);
  // Text rotated a quarter turn to read from bottom to top, starting at (x, y) = its bottom-left.
  void text_up(int x, int y, const std::string& s, Color c, int scale = 1);

  // Writes a PNG (to path.tmp, then renamed over path); creates the parent directory.
  void save_png(const std::string& path) const;

 private:
  int width_, height_;
  std::vector<uint8_t> rgb_;
};

// Size of a one-line string drawn by Canvas::text at the given scale.
int text_width(const std::string& s, int scale = 1);
int text_height(int scale = 1);  // the ascent and descent of the font, kGlyphHeight * scale

// ---------------------------------------------------------------- charts

struct Series {
  std::string label;         // shown in the legend ("" = no legend entry)
  std::vector<double> x, y;  // same length; NaN / inf points are skipped (they break the line)
  Color color;
  bool dashed = false;
};

struct Panel {
  std::string title, xlabel, ylabel;
  std::vector<Series> series;
};

// Panels side by side in one width x height PNG.
void write_png(const std::string& path, const std::vector<Panel>& panels, int width = 1280, int height = 560);

// "Nice" tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi], about `target` of them.
std::vector<double> nice_ticks(double lo, double hi, int target = 6);
// A tick value printed with as many decimals as the step between ticks needs ("0.25", "10").
std::string format_tick(double value, double step);

// ---------------------------------------------------------------- runs

// The columns of one run's metrics.jsonl, one entry per epoch (sorted by epoch; when an epoch
// appears twice, e.g. after a resumed run, the later line wins). Missing optional keys are NaN.
struct RunMetrics {
  std::string label;  // the legend name
  std::string path;   // the metrics.jsonl read
  std::vector<double> epoch, train_loss, train_acc, test_loss, test_acc, best_acc, lr, time_s, images_per_s;
  std::map<std::string, std::vector<double>> loss_parts;  // "loss_kd" -> per epoch (NaN where absent)
};

// Reads RUN_DIR/metrics.jsonl (or a metrics .jsonl file given directly). The label is the run
// directory's base name unless one is given. Errors name the file, and the line number of a line
// that is not JSON or lacks a required key (epoch, train_loss, test_loss, test_acc; train_acc is
// optional, NaN where absent, as in ACD-U's runs).
RunMetrics read_metrics(const std::string& run_dir, const std::string& label = "");

// The curves of runs, overlaid: loss vs epoch and accuracy (%) vs epoch. labels: one per run, or
// empty for the directories' base names (two runs with the same base name get their parent
// directory's name in front).
void plot_runs(const std::vector<std::string>& run_dirs, const std::string& out_png,
               const std::vector<std::string>& labels = {}, int width = 1280, int height = 560);

// ---------------------------------------------------------------- bars

struct Bar {
  std::string label;           // under the bar
  double mean = 0, std = 0;    // the bar's height and its error bar (mean - std .. mean + std)
  std::optional<Color> color;  // default: palette(index of the bar)
};

// One bar per entry with ± std error bars and the value "mean±std" above each. The y axis starts
// at y_min when given, else at 0 when the bars are not all far above it, else just below the
// lowest error bar (so that differences of a fraction of a percent stay visible). `decimals` is
// how the values above the bars are printed.
void bar_chart(const std::string& path, const std::string& title, const std::string& ylabel,
               const std::vector<Bar>& bars, int width = 800, int height = 500,
               std::optional<double> y_min = std::nullopt, int decimals = 2);

}  // namespace kd::plot
