// plot.h: charts drawn with cairo (Debian's libcairo2) and written as PNG or SVG, the format
// chosen by the file's extension. `kdlab plot RUN_DIR...` draws the loss and accuracy curves of
// runs, `kdlab report` and `kdlab plot --bars` draw bars of the mean over seeds, and
// `kdlab analyze` draws its CKA heat map and CAM grid on the same Canvas.
//
// Four pieces, each usable alone:
//   Canvas       a figure of width x height pixels, drawn with cairo onto a recording surface so
//                that the same drawing can be saved as a PNG (pixels) or an SVG (vectors):
//                rectangles, solid or dashed lines, text in DejaVu Sans through cairo's toy font
//                API (fonts-dejavu-core), RGB images; cr() hands out the cairo context for
//                anything else. save() writes atomically (a temporary file, then a rename).
//   write_chart  Panels side by side; a Panel is a titled x-y chart with labelled axes, "nice"
//                tick values, a light grid, its Series as lines, and a legend below the axes
//                (outside the data, so it never hides a curve).
//   plot_runs    reads each run's metrics.jsonl and draws two panels, loss and accuracy against
//                the epoch, one colour per run. One line-style convention in both panels and in
//                their legends (series_style): test curves solid, train curves dashed.
//   bar_chart    one bar per method: the mean, an error bar of ± std when it is over several
//                seeds, the value above it; a value axis that does not start at 0 is marked with
//                break marks and a note "axis starts at N%".
#pragma once
#include <cairo.h>

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

// ---------------------------------------------------------------- output formats

enum class ImageFormat { png, svg };

// The format a path asks for by its extension, ".png" or ".svg" (any case); any other extension
// is a kd::Error that names both.
ImageFormat image_format(const std::string& path);

// ---------------------------------------------------------------- the canvas

enum class Align { left, center, right };

// Text metrics of the chart font (DejaVu Sans) at `size` pixels (cairo's font size, the em).
double text_width(const std::string& utf8, double size);
double text_height(double size);  // the font's ascent + descent: the height of one line's box

class Canvas {
 public:
  Canvas(int width, int height, Color background = kWhite);
  ~Canvas();
  Canvas(const Canvas&) = delete;
  Canvas& operator=(const Canvas&) = delete;

  int width() const { return width_; }
  int height() const { return height_; }
  cairo_t* cr() const { return cr_; }  // the cairo context, for drawing beyond the helpers below

  void fill_rect(double x, double y, double w, double h, Color c);
  // The outline of a box, `thickness` pixels wide and inside it.
  void rect(double x, double y, double w, double h, Color c, double thickness = 1);
  // Lines through the points, `width` pixels wide; dashed: 7 pixels drawn, 4 skipped. A NaN or
  // infinite point breaks the line; a point with no finite neighbour is drawn as a dot.
  void polyline(const std::vector<double>& xs, const std::vector<double>& ys, Color c, double width = 2,
                bool dashed = false);
  // Text whose box (ascent + descent) has its top at y; x is its left end, centre or right end.
  void text(double x, double y, const std::string& utf8, Color c, double size, Align align = Align::left);
  // Text turned a quarter turn to read from bottom to top; the top of its glyphs faces x (the
  // box's left edge), and y is where it starts (left), its centre, or where it ends (right).
  void text_up(double x, double y, const std::string& utf8, Color c, double size, Align align = Align::left);
  // An RGB image (h rows of w pixels, 3 bytes each) with its top-left corner at (x, y), each
  // pixel a scale x scale block (nearest neighbour, no smoothing).
  void image(double x, double y, const std::vector<uint8_t>& rgb, int w, int h, int scale = 1);

  // Writes the drawing as a PNG or an SVG by the path's extension (image_format), to path.tmp
  // then renamed over path; creates the parent directory.
  void save(const std::string& path) const;

 private:
  int width_, height_;
  cairo_surface_t* surface_;  // a recording surface: the drawing, replayed into a PNG or an SVG
  cairo_t* cr_;
};

// ---------------------------------------------------------------- charts

enum class LineStyle { solid, dashed };

struct Series {
  std::vector<double> x, y;  // same length; NaN / inf points are skipped (they break the line)
  Color color;
  LineStyle style = LineStyle::solid;
};

// One legend entry: a short line in the given style, or, with no style, a filled colour swatch
// (the colour of a run, whatever its line style).
struct LegendEntry {
  std::string label;
  Color color;
  std::optional<LineStyle> line;
  bool new_row = false;  // start a new row of the legend with this entry
};

struct Panel {
  std::string title, xlabel, ylabel;
  std::vector<Series> series;
  std::vector<LegendEntry> legend;  // drawn in rows of equal columns below the x-axis label, in this order
};

// Panels side by side in one width x height figure (PNG or SVG by the extension). A long legend
// makes the figure taller rather than squeezing the axes.
void write_chart(const std::string& path, const std::vector<Panel>& panels, int width = 1280, int height = 560);

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

enum class Split { train, test };

// The line style of a curve by the split it measures, the one convention of both panels of
// plot_runs and of their legends: train dashed, test solid (the test curve is the one a reader
// compares across runs).
LineStyle series_style(Split split);

// The two panels of plot_runs: loss vs epoch and accuracy (%) vs epoch, run i in palette(i), each
// split in series_style(split). Each legend lists the runs (colour swatches; the accuracy panel
// adds each run's best test accuracy), then, on a row of its own, the key "train (dashed)" and
// "test (solid)" drawn in those line styles.
std::vector<Panel> run_panels(const std::vector<RunMetrics>& runs);

// The curves of runs, overlaid, as a PNG or SVG (by out's extension). labels: one per run, or
// empty for the directories' base names (two runs with the same base name get their parent
// directory's name in front).
void plot_runs(const std::vector<std::string>& run_dirs, const std::string& out,
               const std::vector<std::string>& labels = {}, int width = 1280, int height = 560);

// ---------------------------------------------------------------- bars

struct Bar {
  std::string label;           // under the bar
  double mean = 0, std = 0;    // the bar's height, and its spread over the n values
  int n = 1;                   // how many values (seeds) the mean is over; 1: no spread to show
  std::optional<Color> color;  // default: palette(index of the bar)
};

// The value printed above a bar: "mean ± std" over several seeds, only "mean" over one.
std::string bar_value_label(const Bar& bar, int decimals = 2);

// The value axis of bar_chart: from lo to hi, ticks `step` apart.
struct BarAxis {
  double lo = 0, hi = 1, step = 1;
};
BarAxis bar_axis(const std::vector<Bar>& bars, std::optional<double> y_min = std::nullopt);
// The note bar_chart prints under the title when the axis starts above 0, "axis starts at 82.5%,
// not at 0" (the "%" when the y label has one); "" when it starts at 0 or below.
std::string bar_axis_note(const BarAxis& axis, const std::string& ylabel);

// One bar per entry, with an error bar (mean - std .. mean + std) where n > 1 and the value
// (bar_value_label) above each. The value axis starts at y_min when given, else at 0 when the
// bars are all equal or not all far above 0, else just below the lowest bar (so that differences
// of a fraction of a percent stay visible). An axis that starts above 0 is marked: break marks
// across the axis and the bars near the bottom, and bar_axis_note under the title. PNG or SVG by
// the extension.
void bar_chart(const std::string& path, const std::string& title, const std::string& ylabel,
               const std::vector<Bar>& bars, int width = 800, int height = 500,
               std::optional<double> y_min = std::nullopt, int decimals = 2);

}  // namespace kd::plot
