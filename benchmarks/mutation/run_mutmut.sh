#!/usr/bin/env bash
# The mutation score of gptref's own tests on data, loss, schedule and step (issue 13), with
# mutmut 3.8.1, in a scratch copy of the committed tree (the repository's config is untouched):
#
#   benchmarks/mutation/run_mutmut.sh [WORKDIR] [MUTANT-GLOB ...]
#
# Scope: every function of gptref/data.py, loss.py, schedule.py and step.py is mutated; each
# mutant runs the tests that cover it (mutmut's stats), chosen from the tests of those modules
# (tests/core/test_data.py, test_loss.py, test_schedule.py, test_loop.py, test_error_messages.py,
# test_conformance_gptref.py)
# and the conformance suite (gptref/conformance, GPTREF_IMPL=gptref), under the `ci`
# hypothesis profile (derandomized). tests/conformance/test_suite.py (subprocesses) is out of scope.
# Results: `mutmut results` in WORKDIR; benchmarks/mutation/summarize.py turns them into
# benchmarks/results/mutmut.json.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-$(mktemp -d)/gptref}"
shift || true
mkdir -p "$work"
git -C "$root" archive HEAD | tar -x -C "$work"
# the book's corpus, where the tests look for it (../shared/data beside the checkout)
[ -e "$work/shared" ] || ln -s "$root/../shared" "$work/shared"
cd "$work"
cat > setup.cfg <<'CFG'
[mutmut]
source_paths = gptref
only_mutate =
    gptref/data.py
    gptref/loss.py
    gptref/schedule.py
    gptref/step.py
pytest_add_cli_args_test_selection =
    tests/core/test_data.py
    tests/core/test_loss.py
    tests/core/test_schedule.py
    tests/core/test_loop.py
    tests/run/test_resume.py
    tests/core/test_error_messages.py
    tests/conformance/test_gptref.py
    gptref/conformance
pytest_add_cli_args =
    -p
    no:cacheprovider
    -q
process_isolation = forkserver
use_git_change_detection = false
CFG
# detect: the ci profile's examples without shrinking: the same verdicts, far less time per killed mutant
export CI=true GPTREF_IMPL=gptref HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-detect}"
time mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "$@"
echo "workdir: $work"
