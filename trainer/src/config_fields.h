// The TrainConfig field table (private to the trainer): one entry per field with its JSON key,
// flag, help and a member pointer, so JSON, flags, help and resume checks share one list.
#pragma once
#include <string>
#include <variant>
#include <vector>

#include "ddpm/trainer/config.h"

namespace ddpm::trainer::detail {

using Member = std::variant<int64_t TrainConfig::*, double TrainConfig::*, bool TrainConfig::*,
                            std::string TrainConfig::*, std::vector<double> TrainConfig::*,
                            Json TrainConfig::*>;

struct Field {
  ConfigKey key;
  Member member;
  std::string type_name;  // INT, FLOAT, BOOL, TEXT, FLOATS, JSON (help and errors)
};

const std::vector<Field>& fields();
const Field* find_field(const std::string& key);  // nullptr when unknown
// Keys of earlier versions that are read and ignored (fid_weights, replaced by fid_extractor),
// so older run dirs still resume and load.
bool retired_key(const std::string& key);

Json get_value(const TrainConfig& c, const Field& f);
// Type-checked assignment; `where` names the origin ("flag --lr", "key \"lr\" in FILE").
void set_value(TrainConfig& c, const Field& f, const Json& v, const std::string& where);
// A flag's text converted to JSON of the field's type ("1e-4" -> 0.0001, "0.9,0.99" -> [..]).
Json parse_flag_value(const Field& f, const std::string& text);

}  // namespace ddpm::trainer::detail
