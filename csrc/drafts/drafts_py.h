// Registers the model-free drafts' C++ proposers in sprinter_ext._C (drafts_py.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace sprinter {
namespace drafts {

// NgramProposer; call after engine::register_engine (their base class _C.Proposer).
void register_ngram(pybind11::module_& m);

}  // namespace drafts
}  // namespace sprinter
