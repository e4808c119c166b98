// Registers the `suffix` draft (drafts/suffix.h) in sprinter_ext._C: SuffixProposer, a
// subclass of _C.Proposer, and suffix_options(), the options' one rule and defaults.
// Call after engine::register_engine (the base class must exist).
#pragma once

#include <pybind11/pybind11.h>

namespace sprinter {
namespace drafts {

void register_suffix(pybind11::module_& m);

}  // namespace drafts
}  // namespace sprinter
