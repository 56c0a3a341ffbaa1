// plot.cpp: the chart layout, metrics.jsonl reading and the bar chart, drawn on the Canvas of
// canvas.cpp.
// See plot.h for the picture each function draws.
#include "analysis/plot.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/error.h"

namespace fs = std::filesystem;

namespace kd::plot {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr Color kGrid{228, 228, 228};               // grid lines
constexpr Color kAxis{60, 60, 60};                  // frame, ticks, tick labels
constexpr Color kText{20, 20, 20};                  // titles and labels
constexpr Color kNote{90, 90, 90};                  // notes such as "axis starts at 80%"
constexpr Color kKeyGray{100, 100, 100};            // legend keys for line styles

void set_color(cairo_t* cr, Color c) { cairo_set_source_rgb(cr, c.r / 255.0, c.g / 255.0, c.b / 255.0); }
}  // namespace

// ================================================================ ticks

// The tick step: 1, 2 or 5 times a power of ten, near range / target.
static double nice_step(double range, int target) {
  const double raw = range / std::max(target, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double frac = raw / mag;  // in [1, 10)
  const double nice = frac < 1.5 ? 1 : frac < 3.5 ? 2 : frac < 7.5 ? 5 : 10;
  return nice * mag;
}

static std::vector<double> ticks_with_step(double lo, double hi, double step) {
  std::vector<double> ticks;
  const double eps = step * 1e-6;
  for (double k = std::ceil((lo - eps) / step); k * step <= hi + eps; k += 1) {
    const double v = k * step;
    ticks.push_back(std::fabs(v) < eps ? 0.0 : v);  // no "-0"
  }
  return ticks;
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  KD_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo < hi, "nice_ticks: the range [{}, {}] is empty or not finite",
           lo, hi);
  return ticks_with_step(lo, hi, nice_step(hi - lo, target));
}

std::string format_tick(double value, double step) {
  const int decimals = std::clamp((int)std::ceil(-std::log10(step) - 1e-9), 0, 8);
  std::string s = fmt::format("{:.{}f}", value, decimals);
  if (s[0] == '-' && s.find_first_not_of("-0.") == std::string::npos) s.erase(0, 1);  // "-0.0" -> "0.0"
  return s;
}

// ================================================================ charts

namespace {

// The axis ranges of a chart and where its plotting area lies on the canvas.
struct Axes {
  double x = 0, y = 0, w = 0, h = 0;  // the plotting area, in pixels (whole numbers)
  double xlo = 0, xhi = 1, ylo = 0, yhi = 1;
  double xstep = 1, ystep = 1;
  std::vector<double> xticks, yticks;
  double X(double v) const { return x + (v - xlo) / (xhi - xlo) * w; }
  double Y(double v) const { return y + h - (v - ylo) / (yhi - ylo) * h; }
};

// The sizes of a chart's text and marks, all from its font size (pixels).
struct Metrics {
  double s;       // labels, ticks, legend
  double title;   // titles
  double line_h;  // the height of one line of text at size s
  double pad, tick, gap;
  double line_w;  // curves
  explicit Metrics(double size)
      : s(size),
        title(1.2 * size),
        line_h(text_height(size)),
        pad(0.7 * size),
        tick(0.35 * size),
        gap(0.3 * size),
        line_w(std::max(2.0, size / 7)) {}
  double legend_key() const { return 2.6 * s; }     // the length of a legend's line key
  double legend_colgap() const { return 1.2 * s; }  // between legend columns
  double legend_row() const { return 1.25 * line_h; }
};

// The font size for a panel of this size: 14 pixels for a 640 x 560 panel, between 9 and 28.
double font_size(double panel_w, double h) { return std::clamp(std::min(panel_w / 45, h / 40), 9.0, 28.0); }

// The centre of the pixel row or column around v, where a 1-pixel line is sharp.
double crisp(double v) { return std::floor(v) + 0.5; }

void stroke_line(cairo_t* cr, double x0, double y0, double x1, double y1, Color c, double width) {
  set_color(cr, c);
  cairo_set_line_width(cr, width);
  cairo_set_line_cap(cr, CAIRO_LINE_CAP_BUTT);
  cairo_move_to(cr, x0, y0);
  cairo_line_to(cr, x1, y1);
  cairo_stroke(cr);
}

// [lo, hi] of the finite values, widened when empty or a single value.
std::pair<double, double> finite_range(const std::vector<const std::vector<double>*>& columns) {
  double lo = INFINITY, hi = -INFINITY;
  for (auto* c : columns)
    for (double v : *c)
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (lo > hi) return {0, 1};  // no data at all
  if (lo == hi) {
    const double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    return {lo - pad, hi + pad};
  }
  return {lo, hi};
}

bool all_integers(const std::vector<const std::vector<double>*>& columns) {
  for (auto* c : columns)
    for (double v : *c)
      if (std::isfinite(v) && v != std::round(v)) return false;
  return true;
}

double widest_tick_label(const std::vector<double>& ticks, double step, double size) {
  double w = 0;
  for (double v : ticks) w = std::max(w, text_width(format_tick(v, step), size));
  return w;
}

// The grid, ticks and tick labels of a chart (the x ticks only when draw_xticks).
void draw_axes(Canvas& cv, const Axes& ax, const Metrics& M, bool draw_xticks) {
  cairo_t* cr = cv.cr();
  for (double v : ax.yticks) {
    const double py = crisp(ax.Y(v));
    stroke_line(cr, ax.x, py, ax.x + ax.w, py, kGrid, 1);
    stroke_line(cr, ax.x - M.tick, py, ax.x, py, kAxis, 1);
    cv.text(ax.x - M.tick - M.gap, py - M.line_h / 2, format_tick(v, ax.ystep), kAxis, M.s, Align::right);
  }
  if (!draw_xticks) return;
  for (double v : ax.xticks) {
    const double px = crisp(ax.X(v));
    stroke_line(cr, px, ax.y, px, ax.y + ax.h, kGrid, 1);
    stroke_line(cr, px, ax.y + ax.h, px, ax.y + ax.h + M.tick, kAxis, 1);
    cv.text(px, ax.y + ax.h + M.tick + M.gap, format_tick(v, ax.xstep), kAxis, M.s, Align::center);
  }
}

void draw_frame(Canvas& cv, const Axes& ax) { cv.rect(ax.x, ax.y, ax.w + 1, ax.h + 1, kAxis, 1); }

// Where everything of one panel goes. The legend is a grid of equal columns (each entry a key,
// then the label) under the x-axis label.
struct PanelLayout {
  Axes ax;          // ranges and ticks; the pixel rectangle is set by draw_panel
  double left = 0;  // pixels from the panel's left edge to the plotting area
  double title_h = 0, xticks_h = 0, xlabel_h = 0;
  double legend_col_w = 0;
  int legend_cols = 1, legend_rows = 0;
};

// The (row, column) of each legend entry in a grid of `cols` columns, filled row by row; an
// entry marked new_row starts a row.
std::vector<std::pair<int, int>> legend_cells(const std::vector<LegendEntry>& legend, int cols) {
  std::vector<std::pair<int, int>> cells;
  int row = 0, col = 0;
  for (const LegendEntry& e : legend) {
    if (col == cols || (e.new_row && col > 0)) ++row, col = 0;
    cells.push_back({row, col++});
  }
  return cells;
}

// Ranges, ticks, margins and the legend grid of a panel pw pixels wide.
PanelLayout layout_panel(const Panel& panel, double pw, const Metrics& M) {
  PanelLayout L;
  std::vector<const std::vector<double>*> xs, ys;
  for (size_t i = 0; i < panel.series.size(); ++i) {
    const Series& se = panel.series[i];
    KD_CHECK(se.x.size() == se.y.size(), "series {} of panel '{}' has {} x values but {} y values", i, panel.title,
             se.x.size(), se.y.size());
    xs.push_back(&se.x);
    ys.push_back(&se.y);
  }
  Axes& ax = L.ax;
  auto [xlo, xhi] = finite_range(xs);
  auto [ylo, yhi] = finite_range(ys);
  const double xpad = 0.02 * (xhi - xlo), ypad = 0.05 * (yhi - ylo);  // room around the curves
  ax.xlo = xlo - xpad;
  ax.xhi = xhi + xpad;
  ax.ylo = ylo - ypad;
  ax.yhi = yhi + ypad;
  ax.xstep = nice_step(ax.xhi - ax.xlo, 7);
  if (all_integers(xs)) ax.xstep = std::max(ax.xstep, 1.0);  // epochs: whole-number ticks
  ax.xticks = ticks_with_step(ax.xlo, ax.xhi, ax.xstep);
  ax.ystep = nice_step(ax.yhi - ax.ylo, 6);
  ax.yticks = ticks_with_step(ax.ylo, ax.yhi, ax.ystep);

  // margins: the y-axis label and the widest y tick label decide the left one
  L.left = M.pad + (panel.ylabel.empty() ? 0 : M.line_h + M.pad) + widest_tick_label(ax.yticks, ax.ystep, M.s) +
           M.tick + M.gap;
  L.title_h = panel.title.empty() ? 0 : text_height(M.title) + M.pad;
  L.xticks_h = M.tick + M.gap + M.line_h;
  L.xlabel_h = panel.xlabel.empty() ? 0 : M.pad / 2 + M.line_h;

  // the legend grid: as many columns of the widest entry as fit under the plotting area
  const double avail = pw - L.left - 1.5 * M.pad;
  for (const LegendEntry& e : panel.legend)
    L.legend_col_w = std::max(L.legend_col_w, M.legend_key() + M.gap + text_width(e.label, M.s));
  const int n = (int)panel.legend.size();
  if (n > 0) {
    L.legend_cols = std::clamp((int)((avail + M.legend_colgap()) / (L.legend_col_w + M.legend_colgap())), 1, n);
    L.legend_rows = (int)legend_cells(panel.legend, L.legend_cols).back().first + 1;
  }
  return L;
}

double legend_height(int rows, const Metrics& M) { return rows == 0 ? 0 : M.pad + rows * M.legend_row(); }

// A legend entry's key at (x, top y) in a row: a short line in the entry's style, or a swatch.
void draw_legend_key(Canvas& cv, const LegendEntry& e, double x, double y, const Metrics& M) {
  const double mid = y + M.line_h / 2;
  if (e.line) {
    cv.polyline({x, x + M.legend_key()}, {mid, mid}, e.color, M.line_w, *e.line == LineStyle::dashed);
  } else {
    const double side = 0.75 * M.s;
    cv.fill_rect(x + (M.legend_key() - side) / 2, mid - side / 2, side, side, e.color);
  }
}

// Draws a panel in the rectangle (px, py, pw, ph), leaving room for legend_rows rows of legend
// (the most any panel of the figure has, so that all plotting areas line up).
void draw_panel(Canvas& cv, const Panel& panel, PanelLayout L, double px, double py, double pw, double ph,
                int legend_rows, const Metrics& M) {
  Axes& ax = L.ax;
  ax.x = std::round(px + L.left);
  ax.y = std::round(py + M.pad + L.title_h);
  ax.w = std::round(pw - L.left - 1.5 * M.pad);
  ax.h = std::round(ph - M.pad - L.title_h - L.xticks_h - L.xlabel_h - legend_height(legend_rows, M) - M.pad);
  KD_CHECK(ax.w > 20 && ax.h > 20,
           "the figure is too small for panel '{}' ({:.0f} x {:.0f} pixels with {} rows of legend): make it larger",
           panel.title, pw, ph, legend_rows);

  // title, grid and ticks, curves (clipped to the plotting area), frame, axis labels, legend
  if (!panel.title.empty()) cv.text(ax.x + ax.w / 2, py + M.pad, panel.title, kText, M.title, Align::center);
  draw_axes(cv, ax, M, true);
  cairo_t* cr = cv.cr();
  cairo_save(cr);
  cairo_rectangle(cr, ax.x, ax.y, ax.w + 1, ax.h + 1);
  cairo_clip(cr);
  for (const Series& se : panel.series) {
    std::vector<double> X(se.x.size()), Y(se.y.size());
    for (size_t i = 0; i < se.x.size(); ++i) {
      X[i] = ax.X(se.x[i]);
      Y[i] = ax.Y(se.y[i]);
    }
    cv.polyline(X, Y, se.color, M.line_w, se.style == LineStyle::dashed);
  }
  cairo_restore(cr);
  draw_frame(cv, ax);
  const double below = ax.y + ax.h + L.xticks_h;
  if (!panel.xlabel.empty()) cv.text(ax.x + ax.w / 2, below + M.pad / 2, panel.xlabel, kText, M.s, Align::center);
  if (!panel.ylabel.empty()) cv.text_up(px + M.pad, ax.y + ax.h / 2, panel.ylabel, kText, M.s, Align::center);
  const double legend_y = below + L.xlabel_h + M.pad;
  const std::vector<std::pair<int, int>> cells = legend_cells(panel.legend, L.legend_cols);
  for (size_t i = 0; i < panel.legend.size(); ++i) {
    const LegendEntry& e = panel.legend[i];
    const auto [row, col] = cells[i];
    const double lx = ax.x + col * (L.legend_col_w + M.legend_colgap());
    const double ly = legend_y + row * M.legend_row();
    draw_legend_key(cv, e, lx, ly, M);
    cv.text(lx + M.legend_key() + M.gap, ly, e.label, kText, M.s);
  }
}

}  // namespace

void write_chart(const std::string& path, const std::vector<Panel>& panels, int width, int height) {
  KD_CHECK(!panels.empty(), "write_chart('{}'): no panels to draw", path);
  image_format(path);  // a wrong extension fails before any drawing
  const int n = (int)panels.size();
  const Metrics M(font_size((double)width / n, height));
  std::vector<PanelLayout> layouts;
  int legend_rows = 0;
  double top_and_bottom = 0;  // the most any panel needs besides its plotting area and legend
  for (int i = 0; i < n; ++i) {
    const PanelLayout& L = layouts.emplace_back(layout_panel(panels[i], (double)width / n, M));
    legend_rows = std::max(legend_rows, L.legend_rows);
    top_and_bottom = std::max(top_and_bottom, 2 * M.pad + L.title_h + L.xticks_h + L.xlabel_h);
  }
  // A long legend (a report over many runs) makes the figure taller rather than squeezing the
  // axes: the plotting area keeps at least the legend's height.
  const double legend_h = legend_height(legend_rows, M);
  height = std::max(height, (int)std::ceil(top_and_bottom + 2 * legend_h));
  Canvas cv(width, height);
  for (int i = 0; i < n; ++i) {
    const double x0 = std::round((double)width * i / n), x1 = std::round((double)width * (i + 1) / n);
    draw_panel(cv, panels[i], layouts[i], x0, 0, x1 - x0, height, legend_rows, M);
  }
  cv.save(path);
}

// ================================================================ runs

static std::string base_name(const std::string& dir) {
  fs::path p = fs::absolute(fs::path(dir)).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "runs/a/" -> "runs/a"
  return p.filename().string();
}

static std::string parent_and_base_name(const std::string& dir) {
  fs::path p = fs::absolute(fs::path(dir)).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return (p.parent_path().filename() / p.filename()).string();
}

RunMetrics read_metrics(const std::string& run_dir, const std::string& label) {
  RunMetrics m;
  std::string dir = run_dir;
  if (fs::is_regular_file(run_dir)) {  // the metrics file itself
    m.path = run_dir;
    dir = fs::path(run_dir).has_parent_path() ? fs::path(run_dir).parent_path().string() : ".";
  } else {
    KD_CHECK(fs::is_directory(run_dir), "the run directory '{}' does not exist", run_dir);
    m.path = (fs::path(run_dir) / "metrics.jsonl").string();
    KD_CHECK(fs::is_regular_file(m.path),
             "no metrics.jsonl in '{}': is it a run directory written by `kdlab train` (and has the run finished "
             "an epoch)?",
             run_dir);
  }
  m.label = label.empty() ? base_name(dir) : label;

  std::ifstream f(m.path);
  KD_CHECK(f.good(), "cannot open '{}'", m.path);
  // train_acc is optional: ACD-U's two-network runs log none (it reads as NaN, not plotted)
  static const char* required[] = {"epoch", "train_loss", "test_loss", "test_acc"};
  static const std::string numeric[] = {"train_loss", "train_acc", "test_loss", "test_acc",
                                        "best_acc",   "lr",        "time_s",    "images_per_s"};
  std::map<int64_t, nlohmann::json> by_epoch;  // a later line for the same epoch replaces the earlier
  std::set<std::string> parts;
  std::string line;
  for (int lineno = 1; std::getline(f, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank line
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      KD_CHECK(false, "{}:{}: not valid JSON ({}); each line of metrics.jsonl must be one JSON object", m.path, lineno,
               e.what());
    }
    KD_CHECK(j.is_object(), "{}:{}: a {} where each line of metrics.jsonl must be one JSON object", m.path, lineno,
             j.type_name());
    for (const char* key : required)
      KD_CHECK(j.contains(key), "{}:{}: no key '{}' (each epoch's line needs {})", m.path, lineno, key,
               fmt::join(required, ", "));
    for (auto& [key, value] : j.items()) {  // other keys are not plotted and may be anything
      const bool is_part = key.rfind("loss_", 0) == 0;
      if (is_part) parts.insert(key);
      if (is_part || std::count(std::begin(numeric), std::end(numeric), key))
        KD_CHECK(value.is_number() || value.is_null(), "{}:{}: '{}' is {} where a number was expected", m.path, lineno,
                 key, value.dump());
    }
    KD_CHECK(j["epoch"].is_number_integer(), "{}:{}: 'epoch' is {} where a whole number was expected", m.path, lineno,
             j["epoch"].dump());
    const int64_t epoch = j["epoch"].get<int64_t>();
    by_epoch[epoch] = std::move(j);
  }
  KD_CHECK(!by_epoch.empty(), "'{}' holds no epochs yet (has the run finished its first epoch?)", m.path);

  // a number, or NaN for null (how JSON writes a NaN loss), a missing key or a non-number
  auto num = [](const nlohmann::json& j, const std::string& key) {
    auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<double>() : kNaN;
  };
  for (auto& [epoch, j] : by_epoch) {
    m.epoch.push_back((double)epoch);
    m.train_loss.push_back(num(j, "train_loss"));
    m.train_acc.push_back(num(j, "train_acc"));
    m.test_loss.push_back(num(j, "test_loss"));
    m.test_acc.push_back(num(j, "test_acc"));
    m.best_acc.push_back(num(j, "best_acc"));
    m.lr.push_back(num(j, "lr"));
    m.time_s.push_back(num(j, "time_s"));
    m.images_per_s.push_back(num(j, "images_per_s"));
    for (const std::string& p : parts) m.loss_parts[p].push_back(num(j, p));
  }
  return m;
}

LineStyle series_style(Split split) { return split == Split::train ? LineStyle::dashed : LineStyle::solid; }

std::vector<Panel> run_panels(const std::vector<RunMetrics>& runs) {
  Panel loss{"Loss", "epoch", "loss", {}, {}};
  Panel acc{"Accuracy", "epoch", "accuracy (%)", {}, {}};
  auto percent = [](std::vector<double> v) {
    for (double& x : v) x *= 100;
    return v;
  };
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunMetrics& r = runs[i];
    const Color c = palette((int)i);
    // train first, so that the test curve (solid) lies on top where the two cross
    loss.series.push_back({r.epoch, r.train_loss, c, series_style(Split::train)});
    loss.series.push_back({r.epoch, r.test_loss, c, series_style(Split::test)});
    acc.series.push_back({r.epoch, percent(r.train_acc), c, series_style(Split::train)});
    acc.series.push_back({r.epoch, percent(r.test_acc), c, series_style(Split::test)});
    double best = -INFINITY;
    for (double a : r.test_acc)
      if (std::isfinite(a)) best = std::max(best, a);
    loss.legend.push_back({r.label, c, std::nullopt});
    acc.legend.push_back(
        {std::isfinite(best) ? fmt::format("{} (best test {:.2f}%)", r.label, 100 * best) : r.label, c, std::nullopt});
  }
  // then the key to the line styles, the same in both panels
  for (Panel* p : {&loss, &acc}) {
    p->legend.push_back({"train (dashed)", kKeyGray, series_style(Split::train), true});
    p->legend.push_back({"test (solid)", kKeyGray, series_style(Split::test)});
  }
  return {loss, acc};
}

void plot_runs(const std::vector<std::string>& run_dirs, const std::string& out, const std::vector<std::string>& labels,
               int width, int height) {
  KD_CHECK(!run_dirs.empty(), "plot: no run directories given (usage: kdlab plot RUN_DIR... --out curves.png)");
  KD_CHECK(labels.empty() || labels.size() == run_dirs.size(), "plot: {} labels for {} runs (give one per run or none)",
           labels.size(), run_dirs.size());
  image_format(out);  // a wrong extension fails before reading the runs
  std::vector<RunMetrics> runs;
  for (size_t i = 0; i < run_dirs.size(); ++i)
    runs.push_back(read_metrics(run_dirs[i], labels.empty() ? "" : labels[i]));
  if (labels.empty()) {  // two runs called "seed0": name them "kd/seed0" and "ce/seed0"
    std::map<std::string, int> count;
    for (auto& r : runs) ++count[r.label];
    for (size_t i = 0; i < runs.size(); ++i)
      if (count[runs[i].label] > 1 && !fs::is_regular_file(run_dirs[i]))
        runs[i].label = parent_and_base_name(run_dirs[i]);
  }
  write_chart(out, run_panels(runs), width, height);
}

// ================================================================ bars

std::string bar_value_label(const Bar& bar, int decimals) {
  if (bar.n > 1) return fmt::format("{:.{}f} ± {:.{}f}", bar.mean, decimals, bar.std, decimals);
  return fmt::format("{:.{}f}", bar.mean, decimals);
}

namespace {
// A break mark: a white band across [x0, x1] centred at height y, its two edges zigzags, drawn
// over the axis line or a bar to show that the axis is cut below it.
void draw_break(Canvas& cv, double x0, double x1, double y, const Metrics& M) {
  const double tooth = 0.5 * M.s, amp = 0.15 * M.s, half = 0.22 * M.s;
  std::vector<double> xs;
  for (double x = x0; x < x1; x += tooth) xs.push_back(x);
  xs.push_back(x1);
  auto edge = [&](size_t i, double mid) { return mid + (i % 2 ? -amp : amp); };  // up and down, tooth by tooth
  cairo_t* cr = cv.cr();
  cairo_move_to(cr, xs[0], edge(0, y - half));  // the band: along the upper edge, back along the lower
  for (size_t i = 1; i < xs.size(); ++i) cairo_line_to(cr, xs[i], edge(i, y - half));
  for (size_t i = xs.size(); i-- > 0;) cairo_line_to(cr, xs[i], edge(i, y + half));
  cairo_close_path(cr);
  set_color(cr, kWhite);
  cairo_fill(cr);
  for (double mid : {y - half, y + half}) {  // its two edges
    cairo_move_to(cr, xs[0], edge(0, mid));
    for (size_t i = 1; i < xs.size(); ++i) cairo_line_to(cr, xs[i], edge(i, mid));
  }
  set_color(cr, kAxis);
  cairo_set_line_width(cr, 1.2);
  cairo_stroke(cr);
}
}  // namespace

BarAxis bar_axis(const std::vector<Bar>& bars, std::optional<double> y_min) {
  KD_CHECK(!bars.empty(), "bar_axis: no bars");
  // the range of the error bars (the means where there are none), plus room for the values above
  double lo = INFINITY, hi = -INFINITY;
  for (const Bar& b : bars) {
    const double spread = b.n > 1 ? b.std : 0.0;
    lo = std::min(lo, b.mean - spread), hi = std::max(hi, b.mean + spread);
  }
  const double span = hi > lo ? hi - lo : std::max(std::fabs(hi) * 0.1, 1.0);
  BarAxis axis;
  if (y_min) {
    axis.lo = *y_min;
  } else if (lo >= 0 && (lo < 0.7 * hi || lo == hi)) {
    axis.lo = 0;  // bars close enough to zero, or all equal (nothing to zoom in on): start at zero
  } else if (lo >= 0) {
    const double step = nice_step(span * 1.3, 5);
    axis.lo = std::floor((lo - 0.15 * span) / step) * step;  // zoomed in: just below the lowest bar
  } else {
    axis.lo = lo - 0.1 * span;  // negative values
  }
  const double highest = axis.lo < 0 ? std::max(hi, 0.0) : hi;
  axis.hi = highest + 0.15 * (highest - axis.lo);  // room for the values above the error bars
  KD_CHECK(axis.lo < axis.hi, "bar_chart: y_min {} is above the highest bar ({})", axis.lo, hi);
  axis.step = nice_step(axis.hi - axis.lo, 6);
  return axis;
}

std::string bar_axis_note(const BarAxis& axis, const std::string& ylabel) {
  if (axis.lo <= 0) return "";
  const bool percent = ylabel.find('%') != std::string::npos;
  return fmt::format("axis starts at {}{}, not at 0", format_tick(axis.lo, axis.step), percent ? "%" : "");
}

void bar_chart(const std::string& path, const std::string& title, const std::string& ylabel,
               const std::vector<Bar>& bars, int width, int height, std::optional<double> y_min, int decimals) {
  KD_CHECK(!bars.empty(), "bar_chart('{}'): no bars to draw", path);
  image_format(path);
  for (const Bar& b : bars) {
    KD_CHECK(std::isfinite(b.mean) && std::isfinite(b.std) && b.std >= 0,
             "bar_chart: bar '{}' has mean {} and std {} (both must be finite, std not negative)", b.label, b.mean,
             b.std);
    KD_CHECK(b.n >= 1 && (b.n > 1 || b.std == 0),
             "bar_chart: bar '{}' is over n = {} values with std {} (n must be at least 1, and one value has no "
             "spread: pass std 0)",
             b.label, b.n, b.std);
  }
  const Metrics M(font_size(width, height));
  const int n = (int)bars.size();
  const BarAxis axis = bar_axis(bars, y_min);
  Axes ax;
  ax.ylo = axis.lo;
  ax.yhi = axis.hi;
  ax.ystep = axis.step;
  ax.yticks = ticks_with_step(ax.ylo, ax.yhi, ax.ystep);
  ax.xlo = 0;
  ax.xhi = n;
  const std::string note = bar_axis_note(axis, ylabel);
  const bool cut = !note.empty();

  // the bar labels: across when they fit their slots, else turned to read upwards
  const double title_h = title.empty() ? 0 : text_height(M.title) + M.pad;
  const double note_h = cut ? M.line_h + M.pad / 2 : 0;
  const double left =
      M.pad + (ylabel.empty() ? 0 : M.line_h + M.pad) + widest_tick_label(ax.yticks, ax.ystep, M.s) + M.tick + M.gap;
  const double right = 2 * M.pad;
  const double slot_w = (width - left - right) / n;
  double label_w = 0;
  for (const Bar& b : bars) label_w = std::max(label_w, text_width(b.label, M.s));
  const bool upright = label_w > slot_w - M.gap;
  const double labels_h = M.tick + (upright ? label_w : M.line_h);
  ax.x = std::round(left);
  ax.y = std::round(M.pad + title_h + note_h);
  ax.w = std::round(width - left - right);
  ax.h = std::round(height - ax.y - labels_h - M.pad);
  KD_CHECK(ax.w > 20 && ax.h > 20, "bar_chart: {} x {} pixels is too small for {} bars: make it larger", width, height,
           n);

  Canvas cv(width, height);
  if (!title.empty()) cv.text(ax.x + ax.w / 2, M.pad, title, kText, M.title, Align::center);
  if (cut) cv.text(ax.x + ax.w / 2, M.pad + title_h, note, kNote, M.s, Align::center);
  draw_axes(cv, ax, M, false);
  const double base = std::clamp(0.0, ax.ylo, ax.yhi);  // bars grow from 0, or from the axis when cut
  // the pixel row of a value, kept inside the plotting area (a bar below a given y_min ends there)
  auto row = [&](double v) { return std::clamp(ax.Y(v), ax.y, ax.y + ax.h); };
  const double bw = std::max(2.0, std::round(ax.w / n * 0.6));
  for (int i = 0; i < n; ++i) {
    const Bar& b = bars[i];
    const Color c = b.color ? *b.color : palette(i);
    const double cx = std::round(ax.X(i + 0.5));
    const double bar_top = row(std::max(b.mean, base)), bar_bottom = row(std::min(b.mean, base));
    cv.fill_rect(cx - bw / 2, bar_top, bw, bar_bottom - bar_top, c);
    double value_top = b.mean;  // what the value label sits above
    if (b.n > 1) {              // the error bar: a vertical line from mean - std to mean + std, with caps
      const double ey0 = row(b.mean + b.std), ey1 = row(b.mean - b.std), cap = std::max(4.0, bw / 4);
      stroke_line(cv.cr(), cx, ey0, cx, ey1, kBlack, 2);
      stroke_line(cv.cr(), cx - cap, ey0, cx + cap, ey0, kBlack, 2);
      stroke_line(cv.cr(), cx - cap, ey1, cx + cap, ey1, kBlack, 2);
      value_top = b.mean + b.std;
    }
    // the value above the bar (smaller when it does not fit the slot)
    const std::string value = bar_value_label(b, decimals);
    const double fits = (slot_w - M.gap) / std::max(1.0, text_width(value, M.s));
    const double vs = std::max(7.0, M.s * std::min(1.0, fits));
    cv.text(cx, row(std::max(value_top, base)) - M.gap - text_height(vs), value, kText, vs, Align::center);
    // the label under the bar
    if (upright)
      cv.text_up(cx - M.line_h / 2, ax.y + ax.h + M.tick, b.label, kText, M.s, Align::right);
    else
      cv.text(cx, ax.y + ax.h + M.tick, b.label, kText, M.s, Align::center);
  }
  draw_frame(cv, ax);
  if (cut) {  // break marks across the axis and every bar, a little above the bottom
    const double yb = ax.y + ax.h - 0.9 * M.s;
    draw_break(cv, ax.x - 0.6 * M.s, ax.x + 0.6 * M.s, yb, M);
    for (int i = 0; i < n; ++i) {
      const double cx = std::round(ax.X(i + 0.5));
      if (row(std::max(bars[i].mean, base)) < yb - 0.5 * M.s) draw_break(cv, cx - bw / 2 - 2, cx + bw / 2 + 2, yb, M);
    }
  }
  if (!ylabel.empty()) cv.text_up(M.pad, ax.y + ax.h / 2, ylabel, kText, M.s, Align::center);
  cv.save(path);
}

}  // namespace kd::plot
