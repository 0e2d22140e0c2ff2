"""Applies mutmut's mutants by name, one after another, in one process:
for each, pytest over the given tests with MUTANT_UNDER_TEST set to it.

mutmut starts a process per mutant and runs every test that reaches the
mutated function; for train/steps' `train_step` that is about a minute
of the 2-core VM a mutant. Here the interpreter, JAX and the persistent
compilation cache stay warm, so a caught mutant costs seconds. It is only
valid for tests that trace the function anew each time (tests/test_steps.py
builds its jitted steps inside each test): the trampoline in `mutants/`
reads MUTANT_UNDER_TEST when the function is called, which under jit is
when it is traced, and a jitted function made once at import would keep
its first trace.

From the repository root, after `mutmut run` has written `mutants/`:

    rm -rf /tmp/mcheck && cp -r mutants /tmp/mcheck
    cp tests/*.py /tmp/mcheck/tests/    # the tests as they are now
    cd /tmp/mcheck && python tests/apply_mutants.py tests/test_steps.py \
      none resnet_jax.train.steps.x_train_step__mutmut_{119..216}

One line per name on stdout: `killed` (a test failed), `SURVIVED`, or
`error` (pytest could not run), with the seconds it took; pytest's own
output goes to apply_mutants.log. `none` is the code itself, which must
pass. A survivor here may still be killed by a test of another file that
mutmut's selection lists; run it with `mutmut run NAME` to know.
"""

import contextlib
import os
import pathlib
import sys
import time

import pytest

VERDICT = {0: 'SURVIVED', 1: 'killed'}
# The copy of mutants/ this file lies in: its resnet_jax, with mutmut's
# trampolines, must be the one the tests import.
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _imported_from_the_copy() -> bool:
  module = sys.modules.get('resnet_jax')
  return (
    module is not None
    and pathlib.Path(module.__file__)
    .resolve()
    .is_relative_to(ROOT / 'resnet_jax')
    and (ROOT / 'mutmut-stats.json').exists()
  )


def main(argv: list[str]) -> int:
  if len(argv) < 2:
    print(__doc__, file=sys.stderr)
    return 2
  tests, names = argv[0], argv[1:]
  with open('apply_mutants.log', 'w') as log:
    for name in names:
      os.environ['MUTANT_UNDER_TEST'] = name
      start = time.time()
      with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        rc = int(
          pytest.main(['-x', '-q', '-n0', '-p', 'no:cacheprovider', tests])
        )
      if not _imported_from_the_copy():
        print(
          f'error: the tests did not import resnet_jax from {ROOT}, a copy '
          "of mutants/ (see this file's docstring)",
          file=sys.stderr,
        )
        return 2
      verdict = VERDICT.get(rc, f'error (pytest exit status {rc})')
      if name == 'none':
        verdict = 'passed' if rc == 0 else f'FAILED (exit status {rc})'
      print(f'{name} {verdict} {time.time() - start:.0f}s', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
