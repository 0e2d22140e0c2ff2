"""What a numeric config key's value may be: a Range, a sequence of them
(Each), and the ranges most keys share. Which key has which, and the
check of them all: config/keys.py."""

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Range:
  """low <= value <= high (strict where `*_open`); integers if `integer`."""

  low: float = -math.inf
  high: float = math.inf
  low_open: bool = False
  high_open: bool = False
  integer: bool = False

  def holds(self, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return False
    if self.integer and value != int(value):
      return False
    if not math.isfinite(value):
      return False
    above = value > self.low if self.low_open else value >= self.low
    below = value < self.high if self.high_open else value <= self.high
    return above and below

  def __str__(self) -> str:
    return self.describe('an integer' if self.integer else 'a number')

  def describe(self, kind: str) -> str:
    if self.high == math.inf:
      return f'{kind} {">" if self.low_open else ">="} {self.low:g}'
    left, right = '(' if self.low_open else '[', ')' if self.high_open else ']'
    return f'{kind} in {left}{self.low:g}, {self.high:g}{right}'


@dataclasses.dataclass(frozen=True)
class Each:
  """A sequence whose items are in `item`: exactly `length` of them if
  given, strictly increasing or non-decreasing if asked."""

  item: Range
  length: int | None = None
  increasing: bool = False
  ordered: bool = False  # non-decreasing

  def holds(self, value) -> bool:
    if not isinstance(value, (tuple, list)):
      return False
    if self.length is not None and len(value) != self.length:
      return False
    if not all(map(self.item.holds, value)):
      return False
    pairs = list(zip(value, value[1:]))
    if self.increasing and any(a >= b for a, b in pairs):
      return False
    return not (self.ordered and any(a > b for a, b in pairs))

  def __str__(self) -> str:
    count = f'{self.length}' if self.length else 'a tuple of'
    items = self.item.describe('integers' if self.item.integer else 'numbers')
    if self.increasing:
      items += ', strictly increasing'
    elif self.ordered:
      items += ', low then high'
    return f'{count} {items}'


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
COUNT = Range(1, integer=True)  # a size, a number of steps or of things
FRACTION = Range(0, 1, high_open=True)  # momenta: 1 would never forget
PROBABILITY = Range(0, 1)
