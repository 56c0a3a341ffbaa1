// plot.cpp: the Canvas primitives, the chart layout, metrics.jsonl reading and the bar chart.
// See plot.h for the picture each function draws.
#include "analysis/plot.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "analysis/plot_font.h"
#include "engine/error.h"

// stb_image_write's functions are made static to this file, so that no other file that also
// compiles the implementation (a test, another tool) can clash with this one at link time.
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

namespace fs = std::filesystem;

namespace kd::plot {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr Color kGrid{232, 232, 232};     // grid lines
constexpr Color kAxis{60, 60, 60};        // frame, ticks, tick labels
constexpr Color kText{20, 20, 20};        // titles and labels
constexpr Color kKeyGray{110, 110, 110};  // legend keys for line styles
}  // namespace

Color palette(int i) {
  static const Color colors[10] = {{31, 119, 180}, {255, 127, 14},  {44, 160, 44},   {214, 39, 40},  {148, 103, 189},
                                   {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
  return colors[((i % 10) + 10) % 10];
}

// ================================================================ the canvas

Canvas::Canvas(int width, int height, Color background) : width_(width), height_(height) {
  KD_CHECK(width > 0 && height > 0 && width <= 16384 && height <= 16384,
           "a canvas of {} x {} pixels: width and height must be in 1..16384", width, height);
  rgb_.resize((size_t)width * height * 3);
  for (size_t i = 0; i < rgb_.size(); i += 3) {
    rgb_[i] = background.r;
    rgb_[i + 1] = background.g;
    rgb_[i + 2] = background.b;
  }
}

Color Canvas::pixel(int x, int y) const {
  KD_CHECK(x >= 0 && y >= 0 && x < width_ && y < height_, "pixel ({}, {}) is outside the {} x {} canvas", x, y, width_,
           height_);
  const uint8_t* p = &rgb_[((size_t)y * width_ + x) * 3];
  return {p[0], p[1], p[2]};
}

void Canvas::set(int x, int y, Color c) {
  if (x < 0 || y < 0 || x >= width_ || y >= height_) return;
  uint8_t* p = &rgb_[((size_t)y * width_ + x) * 3];
  p[0] = c.r;
  p[1] = c.g;
  p[2] = c.b;
}

void Canvas::blend(int x, int y, Color c, double alpha) {
  if (x < 0 || y < 0 || x >= width_ || y >= height_ || alpha <= 0) return;
  if (alpha >= 1) return set(x, y, c);
  uint8_t* p = &rgb_[((size_t)y * width_ + x) * 3];
  // out = alpha * c + (1 - alpha) * background, per channel, rounded
  p[0] = (uint8_t)std::lround(alpha * c.r + (1 - alpha) * p[0]);
  p[1] = (uint8_t)std::lround(alpha * c.g + (1 - alpha) * p[1]);
  p[2] = (uint8_t)std::lround(alpha * c.b + (1 - alpha) * p[2]);
}

void Canvas::fill_rect(int x, int y, int w, int h, Color c) {
  const int x0 = std::max(x, 0), y0 = std::max(y, 0);
  const int x1 = std::min(x + w, width_), y1 = std::min(y + h, height_);
  for (int yy = y0; yy < y1; ++yy)
    for (int xx = x0; xx < x1; ++xx) set(xx, yy, c);
}

void Canvas::rect(int x, int y, int w, int h, Color c, int thickness) {
  fill_rect(x, y, w, thickness, c);                  // top
  fill_rect(x, y + h - thickness, w, thickness, c);  // bottom
  fill_rect(x, y, thickness, h, c);                  // left
  fill_rect(x + w - thickness, y, thickness, h, c);  // right
}

// Pixel (px, py) has its centre at (px + 0.5, py + 0.5). A pixel whose centre is at distance d
// from the segment is covered by clamp(thickness/2 + 0.5 - d, 0, 1): fully inside the stroke,
// fading to nothing over one pixel at its edge (that fade is the anti-aliasing).
void Canvas::line(double x0, double y0, double x1, double y1, Color c, double thickness) {
  if (!std::isfinite(x0) || !std::isfinite(y0) || !std::isfinite(x1) || !std::isfinite(y1)) return;
  const double half = thickness / 2;
  const int bx0 = std::max(0, (int)std::floor(std::min(x0, x1) - half - 1));
  const int by0 = std::max(0, (int)std::floor(std::min(y0, y1) - half - 1));
  const int bx1 = std::min(width_ - 1, (int)std::ceil(std::max(x0, x1) + half + 1));
  const int by1 = std::min(height_ - 1, (int)std::ceil(std::max(y0, y1) + half + 1));
  const double dx = x1 - x0, dy = y1 - y0;
  const double len2 = dx * dx + dy * dy;
  for (int py = by0; py <= by1; ++py) {
    for (int px = bx0; px <= bx1; ++px) {
      const double cx = px + 0.5, cy = py + 0.5;
      // t: where the closest point of the segment lies, 0 at (x0, y0) and 1 at (x1, y1)
      double t = len2 > 0 ? ((cx - x0) * dx + (cy - y0) * dy) / len2 : 0;
      t = std::clamp(t, 0.0, 1.0);
      const double ex = cx - (x0 + t * dx), ey = cy - (y0 + t * dy);
      const double d = std::sqrt(ex * ex + ey * ey);
      blend(px, py, c, std::clamp(half + 0.5 - d, 0.0, 1.0));
    }
  }
}

void Canvas::disc(double cx, double cy, double radius, Color c) { line(cx, cy, cx, cy, c, 2 * radius); }

void Canvas::polyline(const std::vector<double>& xs, const std::vector<double>& ys, Color c, double thickness,
                      bool dashed, double dash, double gap) {
  KD_CHECK(xs.size() == ys.size(), "polyline: {} x values but {} y values", xs.size(), ys.size());
  KD_CHECK(!dashed || (dash > 0 && gap >= 0), "polyline: dash ({}) must be positive and gap ({}) not negative", dash,
           gap);
  const size_t n = xs.size();
  auto finite = [&](size_t i) { return std::isfinite(xs[i]) && std::isfinite(ys[i]); };
  double phase = 0;  // how far into the current dash + gap period the pattern is
  for (size_t i = 0; i < n; ++i) {
    if (!finite(i)) continue;
    const bool prev_ok = i > 0 && finite(i - 1);
    const bool next_ok = i + 1 < n && finite(i + 1);
    if (!prev_ok && !next_ok) disc(xs[i], ys[i], thickness + 1, c);  // a point on its own: a dot
    if (!next_ok) continue;
    const double x0 = xs[i], y0 = ys[i], x1 = xs[i + 1], y1 = ys[i + 1];
    if (!dashed) {
      line(x0, y0, x1, y1, c, thickness);
      continue;
    }
    // walk along the segment, drawing where the pattern is "on"
    const double len = std::hypot(x1 - x0, y1 - y0);
    double s = 0;
    while (s < len) {
      const bool on = phase < dash;
      const double step = std::min(len - s, on ? dash - phase : dash + gap - phase);
      if (on) {
        const double a = s / len, b = (s + step) / len;
        line(x0 + a * (x1 - x0), y0 + a * (y1 - y0), x0 + b * (x1 - x0), y0 + b * (y1 - y0), c, thickness);
      }
      s += step;
      phase = std::fmod(phase + step, dash + gap);
    }
  }
}

// UTF-8 bytes -> code points (a malformed byte becomes '?').
static std::vector<uint32_t> decode_utf8(const std::string& s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const uint8_t b = (uint8_t)s[i];
    const int extra = b < 0x80 ? 0 : (b >> 5) == 0x6 ? 1 : (b >> 4) == 0xE ? 2 : (b >> 3) == 0x1E ? 3 : -1;
    bool ok = extra >= 0 && i + extra < s.size();
    for (int k = 1; ok && k <= extra; ++k) ok = ((uint8_t)s[i + k] >> 6) == 0x2;  // 10xxxxxx
    if (!ok) {  // a stray continuation byte or a cut sequence
      out.push_back('?');
      ++i;
      continue;
    }
    uint32_t code = extra == 0 ? b : extra == 1 ? (b & 0x1F) : extra == 2 ? (b & 0x0F) : (b & 0x07);
    for (int k = 1; k <= extra; ++k) code = (code << 6) | ((uint8_t)s[i + k] & 0x3F);
    out.push_back(code);
    i += extra + 1;
  }
  return out;
}

int text_width(const std::string& s, int scale) {
  const int n = (int)decode_utf8(s).size();
  return n == 0 ? 0 : (n * kGlyphAdvance - (kGlyphAdvance - kGlyphWidth)) * scale;
}

int text_height(int scale) { return kGlyphHeight * scale; }

void Canvas::text(int x, int y, const std::string& s, Color c, int scale) {
  const std::vector<uint32_t> codes = decode_utf8(s);
  for (size_t i = 0; i < codes.size(); ++i) {
    const Glyph& g = glyph_for(codes[i]);
    const int gx = x + (int)i * kGlyphAdvance * scale;
    for (int row = 0; row < kGlyphHeight; ++row)
      for (int col = 0; col < kGlyphWidth; ++col)
        if (glyph_ink(g, col, row)) fill_rect(gx + col * scale, y + row * scale, scale, scale, c);
  }
}

// Turned a quarter turn anticlockwise: glyph row r lands r pixels right of x, and glyph column k
// of character i lands (i * advance + k + 1) pixels above y.
void Canvas::text_up(int x, int y, const std::string& s, Color c, int scale) {
  const std::vector<uint32_t> codes = decode_utf8(s);
  for (size_t i = 0; i < codes.size(); ++i) {
    const Glyph& g = glyph_for(codes[i]);
    for (int row = 0; row < kGlyphHeight; ++row)
      for (int col = 0; col < kGlyphWidth; ++col)
        if (glyph_ink(g, col, row))
          fill_rect(x + row * scale, y - ((int)i * kGlyphAdvance + col + 1) * scale, scale, scale, c);
  }
}

void Canvas::save_png(const std::string& path) const {
  const fs::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) fs::create_directories(p.parent_path(), ec);
  KD_CHECK(!ec, "cannot create the directory '{}' for the plot: {}", p.parent_path().string(), ec.message());
  const std::string tmp = path + ".tmp";
  const int ok = stbi_write_png(tmp.c_str(), width_, height_, 3, rgb_.data(), width_ * 3);
  KD_CHECK(ok != 0, "cannot write the PNG '{}' (is the directory writable and the disk not full?)", tmp);
  fs::rename(tmp, path, ec);
  KD_CHECK(!ec, "cannot rename '{}' to '{}': {}", tmp, path, ec.message());
}

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
  int x = 0, y = 0, w = 0, h = 0;  // the plotting area, in pixels
  double xlo = 0, xhi = 1, ylo = 0, yhi = 1;
  double xstep = 1, ystep = 1;
  std::vector<double> xticks, yticks;
  double X(double v) const { return x + (v - xlo) / (xhi - xlo) * w; }
  double Y(double v) const { return y + h - (v - ylo) / (yhi - ylo) * h; }
};

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

// The frame, grid, ticks and tick labels of a chart (the x ticks only when draw_xticks).
void draw_axes(Canvas& cv, const Axes& ax, int s, bool draw_xticks) {
  const int tick = 4 * s;
  for (double v : ax.yticks) {
    const int py = (int)std::lround(ax.Y(v));
    cv.fill_rect(ax.x, py, ax.w, 1, kGrid);
    cv.fill_rect(ax.x - tick, py, tick, 1, kAxis);
    const std::string label = format_tick(v, ax.ystep);
    cv.text(ax.x - tick - 3 * s - text_width(label, s), py - kGlyphAscent * s / 2, label, kAxis, s);
  }
  if (draw_xticks) {
    for (double v : ax.xticks) {
      const int px = (int)std::lround(ax.X(v));
      cv.fill_rect(px, ax.y, 1, ax.h, kGrid);
      cv.fill_rect(px, ax.y + ax.h, 1, tick, kAxis);
      const std::string label = format_tick(v, ax.xstep);
      cv.text(px - text_width(label, s) / 2, ax.y + ax.h + tick + 3 * s, label, kAxis, s);
    }
  }
}

void draw_frame(Canvas& cv, const Axes& ax) { cv.rect(ax.x, ax.y, ax.w + 1, ax.h + 1, kAxis, 1); }

// The text scale for a panel of this size: 1 for small ones, 2 from 640 x 440 pixels up, ...
int text_scale(int panel_width, int height) { return std::max(1, std::min(panel_width / 320, height / 220)); }

// Where everything of one panel goes. The legend is a grid of equal columns (each entry a short
// line in its series' style, then the label) under the x-axis label.
struct PanelLayout {
  Axes ax;       // ranges and ticks; the pixel rectangle is set by draw_panel
  int left = 0;  // pixels from the panel's left edge to the plotting area
  int title_h = 0, xticks_h = 0, xlabel_h = 0;
  std::vector<const Series*> legend;  // the series with a label
  int legend_cols = 1, legend_col_w = 0, legend_rows = 0;
};

int legend_sample_length(int s) { return 14 * s; }
int legend_gap(int s) { return 12 * s; }

// Ranges, ticks, margins and the legend grid of a panel pw pixels wide.
PanelLayout layout_panel(const Panel& panel, int pw, int s) {
  const int pad = 8 * s;
  PanelLayout L;
  std::vector<const std::vector<double>*> xs, ys;
  for (const Series& se : panel.series) {
    KD_CHECK(se.x.size() == se.y.size(), "series '{}' of panel '{}' has {} x values but {} y values", se.label,
             panel.title, se.x.size(), se.y.size());
    xs.push_back(&se.x);
    ys.push_back(&se.y);
    if (!se.label.empty()) L.legend.push_back(&se);
  }
  Axes& ax = L.ax;
  std::tie(ax.xlo, ax.xhi) = finite_range(xs);
  auto [ylo, yhi] = finite_range(ys);
  const double ypad = 0.05 * (yhi - ylo);  // 5% of room above and below the curves
  ax.ylo = ylo - ypad;
  ax.yhi = yhi + ypad;
  ax.xstep = nice_step(ax.xhi - ax.xlo, 7);
  if (all_integers(xs)) ax.xstep = std::max(ax.xstep, 1.0);  // epochs: whole-number ticks
  ax.xticks = ticks_with_step(ax.xlo, ax.xhi, ax.xstep);
  ax.ystep = nice_step(ax.yhi - ax.ylo, 6);
  ax.yticks = ticks_with_step(ax.ylo, ax.yhi, ax.ystep);

  // margins: the y-axis label and the widest y tick label decide the left one
  int ytick_w = 0;
  for (double v : ax.yticks) ytick_w = std::max(ytick_w, text_width(format_tick(v, ax.ystep), s));
  L.left = pad + (panel.ylabel.empty() ? 0 : text_height(s) + pad) + ytick_w + 3 * s + 4 * s;
  L.title_h = panel.title.empty() ? 0 : text_height(s + 1) + pad;
  L.xticks_h = 4 * s + 3 * s + text_height(s);
  L.xlabel_h = panel.xlabel.empty() ? 0 : pad / 2 + text_height(s);

  // the legend grid: as many columns of the widest entry as fit under the plotting area
  const int avail = pw - L.left - 2 * pad;
  for (const Series* se : L.legend)
    L.legend_col_w = std::max(L.legend_col_w, legend_sample_length(s) + 4 * s + text_width(se->label, s));
  const int n = (int)L.legend.size();
  if (n > 0) {
    L.legend_cols = std::clamp((avail + legend_gap(s)) / (L.legend_col_w + legend_gap(s)), 1, n);
    L.legend_rows = (n + L.legend_cols - 1) / L.legend_cols;
  }
  return L;
}

// Draws a panel in the rectangle (px, py, pw, ph), leaving room for legend_rows rows of legend
// (the most any panel of the figure has, so that all plotting areas line up).
void draw_panel(Canvas& cv, const Panel& panel, PanelLayout L, int px, int py, int pw, int ph, int legend_rows, int s) {
  const int pad = 8 * s, line_h = kLineHeight * s;
  const int legend_h = legend_rows == 0 ? 0 : pad + legend_rows * line_h;
  Axes& ax = L.ax;
  ax.x = px + L.left;
  ax.y = py + pad + L.title_h;
  ax.w = pw - L.left - 2 * pad;
  ax.h = ph - pad - L.title_h - L.xticks_h - L.xlabel_h - legend_h - pad;
  KD_CHECK(ax.w > 20 && ax.h > 20,
           "the figure is too small for panel '{}' ({} x {} pixels with {} rows of legend): make it larger",
           panel.title, pw, ph, legend_rows);

  // title, grid and ticks, curves, frame, axis labels, legend
  if (!panel.title.empty())
    cv.text(ax.x + ax.w / 2 - text_width(panel.title, s + 1) / 2, py + pad, panel.title, kText, s + 1);
  draw_axes(cv, ax, s, true);
  for (const Series& se : panel.series) {
    std::vector<double> X(se.x.size()), Y(se.y.size());
    for (size_t i = 0; i < se.x.size(); ++i) {
      X[i] = ax.X(se.x[i]);
      Y[i] = ax.Y(se.y[i]);
    }
    cv.polyline(X, Y, se.color, 2, se.dashed);
  }
  draw_frame(cv, ax);
  const int below = ax.y + ax.h + L.xticks_h;
  if (!panel.xlabel.empty())
    cv.text(ax.x + ax.w / 2 - text_width(panel.xlabel, s) / 2, below + pad / 2, panel.xlabel, kText, s);
  if (!panel.ylabel.empty())
    cv.text_up(px + pad, ax.y + ax.h / 2 + text_width(panel.ylabel, s) / 2, panel.ylabel, kText, s);
  const int legend_y = below + L.xlabel_h + pad;
  for (size_t i = 0; i < L.legend.size(); ++i) {
    const Series& se = *L.legend[i];
    const int lx = ax.x + (int)(i % L.legend_cols) * (L.legend_col_w + legend_gap(s));
    const int ly = legend_y + (int)(i / L.legend_cols) * line_h;
    const double mid = ly + kGlyphAscent * s / 2.0;
    cv.polyline({(double)lx, (double)(lx + legend_sample_length(s))}, {mid, mid}, se.color, 2, se.dashed, 5, 3);
    cv.text(lx + legend_sample_length(s) + 4 * s, ly, se.label, kText, s);
  }
}

}  // namespace

void write_png(const std::string& path, const std::vector<Panel>& panels, int width, int height) {
  KD_CHECK(!panels.empty(), "write_png('{}'): no panels to draw", path);
  const int n = (int)panels.size();
  const int s = text_scale(width / n, height);
  std::vector<PanelLayout> layouts;
  int legend_rows = 0;
  for (int i = 0; i < n; ++i) {
    layouts.push_back(layout_panel(panels[i], width * (i + 1) / n - width * i / n, s));
    legend_rows = std::max(legend_rows, layouts.back().legend_rows);
  }
  // A long legend (a report over many runs) makes the figure taller rather than squeezing the
  // axes: the legend takes at most about half of it.
  height = std::max(height, 2 * (8 + legend_rows * kLineHeight) * s + 100 * s);
  Canvas cv(width, height);
  for (int i = 0; i < n; ++i) {
    const int x0 = width * i / n, x1 = width * (i + 1) / n;
    draw_panel(cv, panels[i], layouts[i], x0, 0, x1 - x0, height, legend_rows, s);
  }
  cv.save_png(path);
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

void plot_runs(const std::vector<std::string>& run_dirs, const std::string& out_png,
               const std::vector<std::string>& labels, int width, int height) {
  KD_CHECK(!run_dirs.empty(), "plot: no run directories given (usage: kdlab plot RUN_DIR... --out curves.png)");
  KD_CHECK(labels.empty() || labels.size() == run_dirs.size(), "plot: {} labels for {} runs (give one per run or none)",
           labels.size(), run_dirs.size());
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

  Panel loss{"Loss", "epoch", "loss", {}};
  Panel acc{"Accuracy", "epoch", "accuracy (%)", {}};
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunMetrics& r = runs[i];
    const Color c = palette((int)i);
    auto percent = [](std::vector<double> v) {
      for (double& x : v) x *= 100;
      return v;
    };
    double best = -INFINITY;
    for (double a : r.test_acc)
      if (std::isfinite(a)) best = std::max(best, a);
    loss.series.push_back({"", r.epoch, r.train_loss, c, false});
    loss.series.push_back({"", r.epoch, r.test_loss, c, true});
    acc.series.push_back({"", r.epoch, percent(r.test_acc), c, false});
    acc.series.push_back({"", r.epoch, percent(r.train_acc), c, true});
    // the legend: one entry per run (a series with no points draws only its legend entry)
    loss.series.push_back({r.label, {}, {}, c, false});
    acc.series.push_back(
        {std::isfinite(best) ? fmt::format("{} (best {:.2f}%)", r.label, 100 * best) : r.label, {}, {}, c, false});
  }
  // then the key to the line styles
  loss.series.push_back({"train", {}, {}, kKeyGray, false});
  loss.series.push_back({"test", {}, {}, kKeyGray, true});
  acc.series.push_back({"test", {}, {}, kKeyGray, false});
  acc.series.push_back({"train", {}, {}, kKeyGray, true});
  write_png(out_png, {loss, acc}, width, height);
}

// ================================================================ bars

void bar_chart(const std::string& path, const std::string& title, const std::string& ylabel,
               const std::vector<Bar>& bars, int width, int height, std::optional<double> y_min, int decimals) {
  KD_CHECK(!bars.empty(), "bar_chart('{}'): no bars to draw", path);
  for (const Bar& b : bars)
    KD_CHECK(std::isfinite(b.mean) && std::isfinite(b.std) && b.std >= 0,
             "bar_chart: bar '{}' has mean {} and std {} (both must be finite, std not negative)", b.label, b.mean,
             b.std);
  Canvas cv(width, height);
  const int s = text_scale(width, height);
  const int pad = 8 * s;
  const int n = (int)bars.size();

  // y range: the error bars plus room for the value labels above them
  double lo = INFINITY, hi = -INFINITY;
  for (const Bar& b : bars) lo = std::min(lo, b.mean - b.std), hi = std::max(hi, b.mean + b.std);
  const double span = hi > lo ? hi - lo : std::max(std::fabs(hi) * 0.1, 1.0);
  Axes ax;
  if (y_min) {
    ax.ylo = *y_min;
  } else if (lo >= 0 && lo < 0.7 * hi) {
    ax.ylo = 0;  // bars close enough to zero: start at zero
  } else if (lo >= 0) {
    const double step = nice_step(span * 1.3, 5);
    ax.ylo = std::floor((lo - 0.15 * span) / step) * step;  // zoomed in: just below the lowest error bar
  } else {
    ax.ylo = lo - 0.1 * span;  // negative values
  }
  const double highest = ax.ylo < 0 ? std::max(hi, 0.0) : hi;
  ax.yhi = highest + 0.15 * (highest - ax.ylo);  // room for the values above the error bars
  KD_CHECK(ax.ylo < ax.yhi, "bar_chart: y_min {} is above the highest bar ({})", ax.ylo, hi);
  ax.ystep = nice_step(ax.yhi - ax.ylo, 6);
  ax.yticks = ticks_with_step(ax.ylo, ax.yhi, ax.ystep);
  ax.xlo = 0;
  ax.xhi = n;
  int ytick_w = 0;
  for (double v : ax.yticks) ytick_w = std::max(ytick_w, text_width(format_tick(v, ax.ystep), s));

  // the bar labels: across when they fit their slots, else turned to read upwards
  const int title_h = title.empty() ? 0 : text_height(s + 1) + pad;
  const int left = pad + (ylabel.empty() ? 0 : text_height(s) + pad) + ytick_w + 3 * s + 4 * s;
  const int right = 2 * pad;
  const int slot_w = (width - left - right) / n;
  int label_w = 0;
  for (const Bar& b : bars) label_w = std::max(label_w, text_width(b.label, s));
  const bool upright = label_w > slot_w - 4 * s;
  const int labels_h = 4 * s + (upright ? label_w : text_height(s));
  ax.x = left;
  ax.y = pad + title_h;
  ax.w = width - left - right;
  ax.h = height - ax.y - labels_h - pad;
  KD_CHECK(ax.w > 20 && ax.h > 20, "bar_chart: {} x {} pixels is too small for {} bars: make it larger", width, height,
           n);

  if (!title.empty()) cv.text(ax.x + ax.w / 2 - text_width(title, s + 1) / 2, pad, title, kText, s + 1);
  draw_axes(cv, ax, s, false);
  const double base = std::clamp(0.0, ax.ylo, ax.yhi);  // bars grow from 0, or from the axis when zoomed
  // the pixel row of a value, kept inside the plotting area (a bar below a given y_min ends there)
  auto row = [&](double v) { return (int)std::lround(std::clamp(ax.Y(v), (double)ax.y, (double)(ax.y + ax.h))); };
  for (int i = 0; i < n; ++i) {
    const Bar& b = bars[i];
    const Color c = b.color ? *b.color : palette(i);
    const int cx = (int)std::lround(ax.X(i + 0.5));
    const int bw = std::max(2, (int)(ax.w / n * 0.6));
    const int bar_top = row(std::max(b.mean, base)), bar_bottom = row(std::min(b.mean, base));
    cv.fill_rect(cx - bw / 2, bar_top, bw, bar_bottom - bar_top, c);
    // the error bar: a vertical line from mean - std to mean + std with caps
    const int ey0 = row(b.mean + b.std), ey1 = row(b.mean - b.std);
    const int cap = std::max(4, bw / 4);
    cv.fill_rect(cx - 1, ey0, 2, ey1 - ey0 + 1, kBlack);
    cv.fill_rect(cx - cap, ey0 - 1, 2 * cap, 2, kBlack);
    cv.fill_rect(cx - cap, ey1 - 1, 2 * cap, 2, kBlack);
    // the value above the error bar (smaller when it does not fit the slot)
    const std::string value = fmt::format("{:.{}f}±{:.{}f}", b.mean, decimals, b.std, decimals);
    const int vs = text_width(value, s) <= slot_w - 2 * s ? s : 1;
    const int above = row(std::max(b.mean + b.std, base));
    cv.text(cx - text_width(value, vs) / 2, above - 4 * s - kGlyphAscent * vs, value, kText, vs);
    // the label under the bar
    if (upright)
      cv.text_up(cx - text_height(s) / 2, ax.y + ax.h + 4 * s + label_w, b.label, kText, s);
    else
      cv.text(cx - text_width(b.label, s) / 2, ax.y + ax.h + 4 * s, b.label, kText, s);
  }
  draw_frame(cv, ax);
  if (!ylabel.empty()) cv.text_up(pad, ax.y + ax.h / 2 + text_width(ylabel, s) / 2, ylabel, kText, s);
  cv.save_png(path);
}

}  // namespace kd::plot
