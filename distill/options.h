// options.h: a method's options, declared once, in a table.
//
// Every method keeps its hyper-parameters in one options struct whose initialisers are the
// defaults (its official code's), and lists them once, in a table:
//
//     struct KdOptions {
//       double T = 4.0;
//       double ce_weight = 0.1;
//       double kd_weight = 0.9;
//       template <class Self, class F>
//       static void for_each_option(Self& o, F&& f) {
//         f("T", o.T, "temperature of both softmaxes");
//         f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y) that distill_loss adds");
//         f("kd_weight", o.kd_weight, "w_kd, the weight of L_kd");
//       }
//     };
//
// A row is f(key, field, help) or f(key, field, help, in_use): `in_use` says whether the option
// is read under the values of the others (FitNet's stage-2 keys are not when stages=1); an
// option not in use is left out of the run record. Field types: double, int64_t, bool,
// std::string, and std::vector<std::string> written as a comma-separated list ("f1,f2,f3").
// `Self` is the struct or a const one, so that one table serves reading and writing.
//
// From the table, and nothing else:
//   parse_options<O>(method, params)   --set / recipe strings -> O. A key left out keeps its
//                                      default; a value that does not read as its field's type
//                                      and a key that is not in the table are errors that say the
//                                      fix (the unknown-key error lists the known keys).
//   option_params(o)                   O -> strings, for run records and `kdlab loss --explain`;
//                                      numbers as format_number writes them ("4", "0.1", "1e-07").
//   option_infos<O>()                  key, type, default and help of every row, for
//                                      `kdlab distill --list --method M` (DistillerEntry::options).
// A default that follows from another option (DGKD's ce_weight = 1 - lambda, a teacher tap =
// the student's tap) is set by the method's factory after parse_options when the key was not
// given; the row's help says so, and --list shows the value it takes with the defaults.
// Checks of ranges (T > 0, ...) stay in the factory, after parsing.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kd::distill {

// A method's hyper-parameters as strings ("T" -> "4", "beta" -> "8"): the command line
// (--set T=4), recipes and the loss inspector pass them the same way.
using Params = std::map<std::string, std::string>;

// One row of an option table, for listing.
struct OptionInfo {
  std::string key;
  std::string type;           // number | integer | boolean | text | list
  std::string default_value;  // as the run record writes it
  std::string help;           // one line
};

// "4", "0.1", "600": 15 significant digits, so 1 - 0.7 prints as 0.3.
std::string format_number(double v);

// A value as the run record writes it.
std::string option_text(double v);  // format_number
std::string option_text(int64_t v);
std::string option_text(bool v);    // "true" / "false"
std::string option_text(const std::string& v);
std::string option_text(const std::vector<std::string>& v);  // "f1,f2,f3"

// The type's name in listings.
const char* option_type(double);
const char* option_type(int64_t);
const char* option_type(bool);
const char* option_type(const std::string&);
const char* option_type(const std::vector<std::string>&);

// Reads `text` into `value`, which holds the default (shown in errors as the example to follow).
// Errors name the method, the key and the value: "dkd: parameter beta=eight is not a number;
// write it like beta=8". Booleans: 1/true/yes/on and 0/false/no/off. Lists: comma-separated,
// spaces ignored, empty items dropped.
void read_option(const std::string& method, const std::string& key, const std::string& text, double& value);
void read_option(const std::string& method, const std::string& key, const std::string& text, int64_t& value);
void read_option(const std::string& method, const std::string& key, const std::string& text, bool& value);
void read_option(const std::string& method, const std::string& key, const std::string& text, std::string& value);
void read_option(const std::string& method, const std::string& key, const std::string& text,
                 std::vector<std::string>& value);

// Throws when `params` holds a key that is not among `known`, naming the unknown keys and
// listing the known ones: "kd: unknown parameter temperature; the parameters of kd are: T,
// ce_weight, kd_weight".
void check_known_options(const std::string& method, const Params& params, std::vector<std::string> known);

template <class O>
O parse_options(const std::string& method, const Params& params) {
  O o;  // the defaults
  std::vector<std::string> known;
  O::for_each_option(o, [&](const char* key, auto& field, const char* /*help*/, bool /*in_use*/ = true) {
    known.push_back(key);
    if (auto it = params.find(key); it != params.end()) read_option(method, key, it->second, field);
  });
  check_known_options(method, params, known);
  return o;
}

template <class O>
Params option_params(const O& o) {
  Params p;
  O::for_each_option(o, [&](const char* key, const auto& field, const char* /*help*/, bool in_use = true) {
    if (in_use) p[key] = option_text(field);
  });
  return p;
}

template <class O>
std::vector<OptionInfo> option_infos() {
  const O o;  // the defaults
  std::vector<OptionInfo> rows;
  O::for_each_option(o, [&](const char* key, const auto& field, const char* help, bool /*in_use*/ = true) {
    rows.push_back({key, option_type(field), option_text(field), help});
  });
  return rows;
}

}  // namespace kd::distill
