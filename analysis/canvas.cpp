// canvas.cpp: plot.h's Canvas on cairo: a figure drawn once onto a cairo recording surface (the
// list of drawing operations, in pixel units) and replayed at save() into an image surface
// (written as PNG) or an SVG surface (vectors; the text as glyph outlines), so the two formats
// show the same picture. The charts drawn on it are in plot.cpp.
#include <cairo-svg.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "analysis/plot.h"
#include "engine/atomic_file.h"
#include "engine/error.h"

namespace fs = std::filesystem;

namespace kd::plot {

namespace {
constexpr const char* kFontFamily = "DejaVu Sans";  // fonts-dejavu-core; fontconfig falls back to a sans face
constexpr double kDash[] = {7, 4};                  // a dashed line: 7 pixels drawn, 4 skipped

void set_color(cairo_t* cr, Color c) { cairo_set_source_rgb(cr, c.r / 255.0, c.g / 255.0, c.b / 255.0); }

void set_font(cairo_t* cr, double size) {
  cairo_select_font_face(cr, kFontFamily, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

// A context on a 1 x 1 surface, for measuring text before the figure's size is known.
struct Measurer {
  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_A8, 1, 1);
  cairo_t* cr = cairo_create(surface);
  explicit Measurer(double size) { set_font(cr, size); }
  ~Measurer() {
    cairo_destroy(cr);
    cairo_surface_destroy(surface);
  }
};

cairo_status_t append_to_string(void* closure, const unsigned char* data, unsigned int length) {
  static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}
}  // namespace

Color palette(int i) {
  static const Color colors[10] = {{31, 119, 180}, {255, 127, 14},  {44, 160, 44},   {214, 39, 40},  {148, 103, 189},
                                   {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
  return colors[((i % 10) + 10) % 10];
}

ImageFormat image_format(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return (char)std::tolower(c); });
  if (ext == ".png") return ImageFormat::png;
  if (ext == ".svg") return ImageFormat::svg;
  throw Error(
      fmt::format("cannot tell the image format of '{}' from its extension '{}': name the file .png (pixels) "
                  "or .svg (vectors)",
                  path, ext));
}

// ================================================================ the canvas

double text_width(const std::string& utf8, double size) {
  Measurer m(size);
  cairo_text_extents_t te;
  cairo_text_extents(m.cr, utf8.c_str(), &te);
  return te.x_advance;
}

double text_height(double size) {
  Measurer m(size);
  cairo_font_extents_t fe;
  cairo_font_extents(m.cr, &fe);
  return fe.ascent + fe.descent;
}

Canvas::Canvas(int width, int height, Color background) : width_(width), height_(height) {
  KD_CHECK(width > 0 && height > 0 && width <= 16384 && height <= 16384,
           "a canvas of {} x {} pixels: width and height must be in 1..16384", width, height);
  const cairo_rectangle_t extents{0, 0, (double)width, (double)height};
  surface_ = cairo_recording_surface_create(CAIRO_CONTENT_COLOR, &extents);
  cr_ = cairo_create(surface_);
  KD_CHECK(cairo_status(cr_) == CAIRO_STATUS_SUCCESS, "cairo cannot start a {} x {} drawing: {}", width, height,
           cairo_status_to_string(cairo_status(cr_)));
  set_color(cr_, background);
  cairo_paint(cr_);
  cairo_set_line_join(cr_, CAIRO_LINE_JOIN_ROUND);
}

Canvas::~Canvas() {
  cairo_destroy(cr_);
  cairo_surface_destroy(surface_);
}

void Canvas::fill_rect(double x, double y, double w, double h, Color c) {
  set_color(cr_, c);
  cairo_rectangle(cr_, x, y, w, h);
  cairo_fill(cr_);
}

void Canvas::rect(double x, double y, double w, double h, Color c, double thickness) {
  set_color(cr_, c);
  cairo_set_line_width(cr_, thickness);
  cairo_rectangle(cr_, x + thickness / 2, y + thickness / 2, w - thickness, h - thickness);
  cairo_stroke(cr_);
}

void Canvas::polyline(const std::vector<double>& xs, const std::vector<double>& ys, Color c, double width,
                      bool dashed) {
  KD_CHECK(xs.size() == ys.size(), "polyline: {} x values but {} y values", xs.size(), ys.size());
  const size_t n = xs.size();
  auto finite = [&](size_t i) { return i < n && std::isfinite(xs[i]) && std::isfinite(ys[i]); };
  set_color(cr_, c);
  // the dots first: points with no finite neighbour, as filled circles
  for (size_t i = 0; i < n; ++i)
    if (finite(i) && !(i > 0 && finite(i - 1)) && !finite(i + 1)) {
      cairo_new_sub_path(cr_);
      cairo_arc(cr_, xs[i], ys[i], width + 1, 0, 2 * M_PI);
      cairo_fill(cr_);
    }
  // then the lines: a new sub-path after every break (the dash pattern restarts there)
  for (size_t i = 0; i < n; ++i) {
    if (!finite(i)) continue;
    if (i > 0 && finite(i - 1))
      cairo_line_to(cr_, xs[i], ys[i]);
    else
      cairo_move_to(cr_, xs[i], ys[i]);
  }
  cairo_set_line_width(cr_, width);
  cairo_set_line_cap(cr_, CAIRO_LINE_CAP_BUTT);
  if (dashed) cairo_set_dash(cr_, kDash, 2, 0);
  cairo_stroke(cr_);
  cairo_set_dash(cr_, nullptr, 0, 0);
}

// Draws `utf8` with the left end of its baseline at the current point shifted by the alignment.
static void show_text(cairo_t* cr, const std::string& utf8, Color c, double size, Align align) {
  set_font(cr, size);
  cairo_font_extents_t fe;
  cairo_font_extents(cr, &fe);
  cairo_text_extents_t te;
  cairo_text_extents(cr, utf8.c_str(), &te);
  const double shift = align == Align::left ? 0 : align == Align::center ? te.x_advance / 2 : te.x_advance;
  cairo_rel_move_to(cr, -shift, fe.ascent);  // from the top of the box to the baseline
  set_color(cr, c);
  cairo_show_text(cr, utf8.c_str());
  cairo_new_path(cr);
}

void Canvas::text(double x, double y, const std::string& utf8, Color c, double size, Align align) {
  cairo_move_to(cr_, x, y);
  show_text(cr_, utf8, c, size, align);
}

void Canvas::text_up(double x, double y, const std::string& utf8, Color c, double size, Align align) {
  cairo_save(cr_);
  cairo_translate(cr_, x, y);
  cairo_rotate(cr_, -M_PI / 2);  // the text's x axis now points up the page, its y axis to the right
  cairo_move_to(cr_, 0, 0);
  show_text(cr_, utf8, c, size, align);
  cairo_restore(cr_);
}

void Canvas::image(double x, double y, const std::vector<uint8_t>& rgb, int w, int h, int scale) {
  KD_CHECK(w > 0 && h > 0 && scale > 0 && rgb.size() == (size_t)w * h * 3,
           "Canvas::image: {} bytes for a {} x {} RGB image (expected {}), scale {}", rgb.size(), w, h,
           (size_t)w * h * 3, scale);
  // cairo's RGB24: one 32-bit word per pixel, 0x00RRGGBB, rows `stride` bytes apart
  cairo_surface_t* img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h);
  const int stride = cairo_image_surface_get_stride(img);
  unsigned char* data = cairo_image_surface_get_data(img);
  for (int r = 0; r < h; ++r) {
    uint32_t* row = reinterpret_cast<uint32_t*>(data + (size_t)r * stride);
    for (int col = 0; col < w; ++col) {
      const uint8_t* p = &rgb[((size_t)r * w + col) * 3];
      row[col] = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
    }
  }
  cairo_surface_mark_dirty(img);
  cairo_save(cr_);
  cairo_translate(cr_, x, y);
  cairo_scale(cr_, scale, scale);
  cairo_set_source_surface(cr_, img, 0, 0);
  cairo_pattern_set_filter(cairo_get_source(cr_), CAIRO_FILTER_NEAREST);
  cairo_rectangle(cr_, 0, 0, w, h);
  cairo_fill(cr_);
  cairo_restore(cr_);
  cairo_surface_destroy(img);  // the recording keeps its own reference
}

void Canvas::save(const std::string& path) const {
  const ImageFormat format = image_format(path);
  const fs::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) fs::create_directories(p.parent_path(), ec);
  KD_CHECK(!ec, "cannot create the directory '{}' for the figure: {}", p.parent_path().string(), ec.message());
  KD_CHECK(cairo_status(cr_) == CAIRO_STATUS_SUCCESS, "cairo failed while drawing '{}': {}", path,
           cairo_status_to_string(cairo_status(cr_)));

  // replay the recording into the output surface, which writes its bytes into `bytes`
  std::string bytes;
  cairo_surface_t* out = format == ImageFormat::png
                             ? cairo_image_surface_create(CAIRO_FORMAT_RGB24, width_, height_)
                             : cairo_svg_surface_create_for_stream(append_to_string, &bytes, width_, height_);
  if (format == ImageFormat::svg) cairo_svg_surface_set_document_unit(out, CAIRO_SVG_UNIT_PX);
  cairo_t* cr = cairo_create(out);
  cairo_set_source_surface(cr, surface_, 0, 0);
  cairo_paint(cr);
  cairo_destroy(cr);
  cairo_status_t status;
  if (format == ImageFormat::png) {
    cairo_surface_flush(out);
    status = cairo_surface_write_to_png_stream(out, append_to_string, &bytes);
  } else {
    cairo_surface_finish(out);  // an SVG surface writes its document when finished
    status = cairo_surface_status(out);
  }
  cairo_surface_destroy(out);
  KD_CHECK(status == CAIRO_STATUS_SUCCESS, "cairo cannot render '{}': {}", path, cairo_status_to_string(status));
  write_file_atomic(path, bytes);
}

}  // namespace kd::plot
