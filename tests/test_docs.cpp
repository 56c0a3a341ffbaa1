// test_docs.cpp: every code citation on the method pages (docs/methods/*.md) points at code that
// exists, so that a page cannot silently go stale when the code moves.
//
// What a page cites, and what is checked:
//   1. `FILE:LINE` anywhere on the page (prose, tables, gdb sessions such as
//      `break step_kd.cpp:57`): FILE exists and has at least LINE lines. FILE is a path from the
//      repository root (`distill/output/kd.cpp:40`) or a bare file name (`step_kd.cpp:57`) that
//      names exactly one file of the repository.
//   2. The equation-to-code tables, those whose header has a column named "file ..."
//      (`| term | file : function |`). In that column, every `backticked` token must be a file or
//      a function name:
//        `distill/output/dkd.cpp` : `dkd_loss`, `binary_log_split`
//        `distill/output/kd.cpp` : `kd_loss` (uses `kl_div`, `engine/ops/loss.cpp`)
//        `distill/output/wkd_l.cpp` : `wkd_l_loss` (+ `non_target_index`, `common.cpp`)
//      A file must exist (a bare name is looked up beside the row's first file, then in the whole
//      repository). A name (`kd_loss`, `kd_loss()`, `KdDistiller::loss`) must appear as a whole
//      word in its file: the row's first file, or for a name inside parentheses that also name a
//      file, that file. `A::b` needs both `A` and `b` there (a method is defined as `A::b` in a .cpp
//      but written `b` inside its class).
// Paths in prose without a line number are not checked: pages also cite the official code
// (`mdistiller/distillers/KD.py`), which is not in this repository.
#include <algorithm>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "test_util.h"

namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int64_t count_lines(const std::string& text) {
  if (text.empty()) return 0;
  int64_t n = std::count(text.begin(), text.end(), '\n');
  return text.back() == '\n' ? n : n + 1;
}

bool is_word_char(char c) { return std::isalnum((unsigned char)c) || c == '_'; }

bool contains_word(const std::string& text, const std::string& word) {
  for (size_t at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) {
    const bool left_ok = at == 0 || !is_word_char(text[at - 1]);
    const bool right_ok = at + word.size() >= text.size() || !is_word_char(text[at + word.size()]);
    if (left_ok && right_ok) return true;
  }
  return false;
}

// A file token: a path ending in a source or text extension.
bool looks_like_file(const std::string& token) {
  static const std::regex file_re(R"(^[A-Za-z0-9_./-]+\.(cpp|h|hpp|c|cmake|txt|md|py|sh|json|ipynb)$)");
  return std::regex_match(token, file_re);
}

// A function, class or namespace-qualified name, optionally with "()".
bool looks_like_name(const std::string& token) {
  static const std::regex name_re(R"(^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*(\(\))?$)");
  return std::regex_match(token, name_re);
}

// The repository's files (build folders, run records and .git left out), by bare name.
class RepoIndex {
 public:
  explicit RepoIndex(fs::path root) : root_(std::move(root)) {
    // Other builds and runs write into the tree while the tests run: a file that vanishes
    // mid-walk is skipped (error codes, not exceptions).
    std::error_code ec;
    auto it = fs::recursive_directory_iterator(root_, fs::directory_options::skip_permission_denied, ec);
    for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (it->is_directory(ec)) {
        if (name.rfind("build", 0) == 0 || name == ".git" || name == "runs" || name == "__pycache__")
          it.disable_recursion_pending();
        continue;
      }
      by_name_[name].push_back(fs::relative(it->path(), root_));
    }
  }
  const fs::path& root() const { return root_; }

  // The file a citation names: a path from the root, else `near`'s folder, else a unique bare
  // name. Empty (and `why` set) when there is none or more than one.
  fs::path resolve(const std::string& cited, const fs::path& near, std::string& why) const {
    if (cited.find('/') != std::string::npos) {
      if (fs::is_regular_file(root_ / cited)) return cited;
      why = "no such file (paths are from the repository root)";
      return {};
    }
    if (!near.empty() && fs::is_regular_file(root_ / near.parent_path() / cited)) return near.parent_path() / cited;
    auto it = by_name_.find(cited);
    if (it == by_name_.end()) {
      why = "no file of that name in the repository";
      return {};
    }
    if (it->second.size() > 1) {
      why = fmt::format("{} files have that name; cite it with its folder", it->second.size());
      return {};
    }
    return it->second.front();
  }

 private:
  fs::path root_;
  std::map<std::string, std::vector<fs::path>> by_name_;
};

struct PageReport {
  std::vector<std::string> problems;  // one line each: "line N: what is wrong"
  int line_citations = 0;             // FILE:LINE citations checked
  int table_files = 0;                // files cited in equation-to-code tables
  int table_names = 0;                // function names checked in their files
};

std::vector<std::string> split_cells(const std::string& row) {
  std::vector<std::string> cells;
  std::string s = row;
  if (!s.empty() && s.front() == '|') s.erase(0, 1);
  if (!s.empty() && s.back() == '|') s.pop_back();
  std::string cell;
  int in_code = 0;
  for (char c : s) {
    if (c == '`') in_code ^= 1;
    if (c == '|' && !in_code) {
      cells.push_back(cell);
      cell.clear();
    } else {
      cell += c;
    }
  }
  cells.push_back(cell);
  return cells;
}

// One cell of a file column: the backticked tokens, each with the parenthesis group it is in
// (0 = outside any parentheses, 1.. = the n-th group).
struct Token {
  std::string text;
  int group = 0;
};

std::vector<Token> cell_tokens(const std::string& cell) {
  std::vector<Token> out;
  int group = 0, depth = 0, groups_seen = 0;
  for (size_t i = 0; i < cell.size(); ++i) {
    const char c = cell[i];
    if (c == '`') {
      const size_t end = cell.find('`', i + 1);
      if (end == std::string::npos) break;
      out.push_back({cell.substr(i + 1, end - i - 1), group});
      i = end;
    } else if (c == '(') {
      if (depth++ == 0) group = ++groups_seen;
    } else if (c == ')') {
      if (depth > 0 && --depth == 0) group = 0;
    }
  }
  return out;
}

void check_table_cell(const std::string& cell, int line_no, const RepoIndex& repo, PageReport& rep) {
  std::vector<Token> tokens = cell_tokens(cell);
  // the row's first file, then the file of each parenthesis group that names one
  fs::path row_file;
  std::map<int, fs::path> group_file;
  bool row_file_bad = false;
  for (const Token& t : tokens) {
    if (!looks_like_file(t.text)) continue;
    std::string why;
    fs::path p = repo.resolve(t.text, row_file, why);
    ++rep.table_files;
    if (p.empty()) rep.problems.push_back(fmt::format("line {}: file `{}`: {}", line_no, t.text, why));
    if (t.group == 0 && row_file.empty() && !row_file_bad) {
      row_file = p;
      row_file_bad = p.empty();
    } else if (t.group > 0 && !group_file.count(t.group)) {
      group_file[t.group] = p;
    }
  }
  for (const Token& t : tokens) {
    if (looks_like_file(t.text)) continue;
    if (!looks_like_name(t.text)) {
      rep.problems.push_back(fmt::format(
          "line {}: `{}` in a file column is neither a file nor a function name (write `path/file.cpp` : `name`)",
          line_no, t.text));
      continue;
    }
    fs::path file = row_file;
    if (t.group > 0 && group_file.count(t.group)) file = group_file[t.group];
    if (file.empty()) {
      if (!row_file_bad)
        rep.problems.push_back(fmt::format("line {}: `{}` is cited without a file before it", line_no, t.text));
      continue;
    }
    std::string name = t.text;
    if (name.size() > 2 && name.compare(name.size() - 2, 2, "()") == 0) name.resize(name.size() - 2);
    const std::string text = read_text(repo.root() / file);
    ++rep.table_names;
    size_t start = 0;
    while (true) {
      const size_t sep = name.find("::", start);
      const std::string part = name.substr(start, sep == std::string::npos ? std::string::npos : sep - start);
      if (!contains_word(text, part))
        rep.problems.push_back(fmt::format("line {}: `{}` cited in {}, but {} does not contain `{}`", line_no, t.text,
                                           file.string(), file.string(), part));
      if (sep == std::string::npos) break;
      start = sep + 2;
    }
  }
}

PageReport check_page(const std::string& page, const RepoIndex& repo) {
  PageReport rep;
  static const std::regex line_cite_re(R"(([A-Za-z0-9_][A-Za-z0-9_./-]*\.(cpp|h|hpp|c|py|sh|cmake|txt|md)):([0-9]+))");
  std::istringstream in(page);
  std::string line;
  int line_no = 0;
  int file_column = -1;  // index of the "file ..." column while inside an equation-to-code table
  bool in_fence = false;  // inside a ``` block: FILE:LINE is read there, tables are not
  while (std::getline(in, line)) {
    ++line_no;
    if (line.rfind("```", 0) == 0) in_fence = !in_fence;
    // 1. FILE:LINE anywhere
    for (auto it = std::sregex_iterator(line.begin(), line.end(), line_cite_re); it != std::sregex_iterator(); ++it) {
      const std::string cited = (*it)[1].str();
      const int64_t want = std::stoll((*it)[3].str());
      ++rep.line_citations;
      std::string why;
      fs::path p = repo.resolve(cited, {}, why);
      if (p.empty()) {
        rep.problems.push_back(fmt::format("line {}: {}:{}: {}", line_no, cited, want, why));
        continue;
      }
      const int64_t have = count_lines(read_text(repo.root() / p));
      if (have < want)
        rep.problems.push_back(fmt::format("line {}: {}:{} cited, but {} has only {} lines", line_no, cited, want,
                                           p.string(), have));
    }
    // 2. the equation-to-code tables
    const bool table_row = !in_fence && !line.empty() && line.front() == '|';
    if (!table_row) {
      file_column = -1;
      continue;
    }
    std::vector<std::string> cells = split_cells(line);
    if (file_column < 0) {  // a header row, or a row of a table that is not ours
      static const std::regex rule_re(R"(^\s*:?-+:?\s*$)");
      if (std::regex_match(cells[0], rule_re)) continue;
      for (size_t c = 0; c < cells.size(); ++c) {
        static const std::regex header_re(R"(^\s*file\b.*)");
        if (std::regex_match(cells[c], header_re)) file_column = (int)c;
      }
      if (file_column < 0) file_column = -2;  // some other table: skip its rows
      continue;
    }
    if (file_column == -2) continue;
    static const std::regex rule_re(R"(^\s*:?-+:?\s*$)");
    if (std::regex_match(cells[0], rule_re)) continue;
    if (file_column >= (int)cells.size()) {
      rep.problems.push_back(fmt::format("line {}: the row has no file column", line_no));
      continue;
    }
    check_table_cell(cells[file_column], line_no, repo, rep);
  }
  return rep;
}

std::string report_text(const PageReport& rep) {
  std::string s;
  for (const std::string& p : rep.problems) s += "  " + p + "\n";
  return s;
}

const RepoIndex& repo_index() {
  static const RepoIndex index(KDLAB_SOURCE_DIR);
  return index;
}

}  // namespace

TEST_CASE("docs: every file:line and function a method page cites exists") {
  const fs::path dir = fs::path(KDLAB_SOURCE_DIR) / "docs" / "methods";
  REQUIRE(fs::is_directory(dir));
  std::vector<fs::path> pages;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".md") pages.push_back(e.path());
  std::sort(pages.begin(), pages.end());
  // the output family's pages at least (the feature and relation families add theirs)
  for (const char* must : {"kd.md", "dkd.md", "dgkd.md", "wkd_l.md", "acd_u.md"})
    CHECK_MESSAGE(fs::exists(dir / must), "docs/methods/" << must << " is missing");
  for (const fs::path& page : pages) {
    CAPTURE(page.filename().string());
    PageReport rep = check_page(read_text(page), repo_index());
    CHECK_MESSAGE(rep.problems.empty(), "stale citations on docs/methods/" << page.filename().string() << ":\n"
                                                                          << report_text(rep));
    // every page maps its equation to code
    CHECK_MESSAGE(rep.table_names > 0, "docs/methods/" << page.filename().string()
                                                       << " has no equation-to-code table (| term | file : function |)");
  }
}

TEST_CASE("docs: the citation checker reports stale citations") {
  const RepoIndex& repo = repo_index();
  SUBCASE("a page that cites correctly passes") {
    PageReport rep = check_page("see `break step_kd.cpp:10`\n\n"
                                "| term | file : function |\n|---|---|\n"
                                "| `ps` | `distill/output/kd.cpp` : `kd_loss`, `KdDistiller::loss` |\n"
                                "| KL | `distill/output/kd.cpp` : `kd_loss()` (uses `kl_div`, `engine/ops/loss.cpp`) |\n"
                                "| idx | `distill/output/wkd_l.cpp` : `wkd_l_loss` (+ `non_target_index`, `common.cpp`) |\n",
                                repo);
    CHECK_MESSAGE(rep.problems.empty(), report_text(rep));
    CHECK(rep.line_citations == 1);
    CHECK(rep.table_files == 5);
    CHECK(rep.table_names == 6);
  }
  SUBCASE("a line past the end of the file") {
    PageReport rep = check_page("break step_kd.cpp:100000\n", repo);
    REQUIRE(rep.problems.size() == 1);
    CHECK(rep.problems[0].find("has only") != std::string::npos);
  }
  SUBCASE("a file that does not exist, by path and by bare name") {
    PageReport rep = check_page("distill/output/nope.cpp:3 and nope_at_all.cpp:4\n", repo);
    CHECK(rep.problems.size() == 2);
  }
  SUBCASE("a function that is not in its file") {
    PageReport rep = check_page("| term | file : function |\n|---|---|\n"
                                "| x | `distill/output/kd.cpp` : `kd_loss`, `dkd_loss`, `KdDistiller::nothing_here` |\n",
                                repo);
    REQUIRE(rep.problems.size() == 2);
    CHECK(rep.problems[0].find("`dkd_loss`") != std::string::npos);
    CHECK(rep.problems[1].find("`nothing_here`") != std::string::npos);
  }
  SUBCASE("a name inside parentheses is looked up in the file of those parentheses") {
    PageReport rep = check_page("| term | file : function |\n|---|---|\n"
                                "| x | `distill/output/kd.cpp` : `kd_loss` (uses `cross_entropy`, `engine/ops/loss.cpp`) |\n"
                                "| y | `distill/output/kd.cpp` : `kd_loss` (uses `kd_loss`, `engine/ops/loss.cpp`) |\n",
                                repo);
    REQUIRE(rep.problems.size() == 1);
    CHECK(rep.problems[0].find("line 4:") == 0);
  }
  SUBCASE("a token in the file column that is neither file nor name") {
    PageReport rep =
        check_page("| term | file : function |\n|---|---|\n| x | `distill/output/kd.cpp` : `T * T` |\n", repo);
    REQUIRE(rep.problems.size() == 1);
    CHECK(rep.problems[0].find("neither a file nor a function name") != std::string::npos);
  }
  SUBCASE("a bare file name that names several files") {
    PageReport rep = check_page("CMakeLists.txt:1\n", repo);
    REQUIRE(rep.problems.size() == 1);
    CHECK(rep.problems[0].find("cite it with its folder") != std::string::npos);
  }
  SUBCASE("tables without a file column are not read") {
    PageReport rep = check_page("| parameter | default |\n|---|---|\n| `T` | `not_a_function_anywhere` |\n", repo);
    CHECK(rep.problems.empty());
    CHECK(rep.table_names == 0);
  }
}
