from __future__ import annotations

from datetime import date, timedelta

import pytest

from portal.charts import HEIGHT, bar_chart, nice_ceiling
from portal.templatetags.portal_tags import thousands, usd


@pytest.mark.parametrize(("value", "expected"), [
    (0, 1), (1, 1), (3, 5), (7, 10), (11, 20), (2_371, 5_000), (4_000_000, 5_000_000)])
def test_the_axis_tops_out_at_a_round_number(value, expected):
    assert nice_ceiling(value) == expected


def test_bars_stack_bottom_up_in_proportion_to_their_values():
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(3)]

    chart = bar_chart(days=days, format_value=thousands, series=[
        ("Prompt", "p", [0, 600, 2000]), ("Completion", "c", [0, 400, 3000])])

    assert chart.ticks[-1].label == "5,000"  # the top of the axis
    empty, half, full = chart.columns
    assert empty.segments == ()
    prompt, completion = full.segments
    assert prompt.y + prompt.height == pytest.approx(HEIGHT - 22)  # sits on the axis
    assert completion.y + completion.height == pytest.approx(prompt.y)  # on top of it
    assert full.segments[0].height + full.segments[1].height == pytest.approx(
        5 * (half.segments[0].height + half.segments[1].height))
    assert full.title == "Tue 03 Nov: Prompt 2,000, Completion 3,000"
    assert not chart.empty


def test_a_chart_of_nothing_says_so():
    chart = bar_chart(days=[date(2026, 11, 1)], format_value=usd,
                      series=[("Spend", "s", [0])])

    assert chart.empty
    assert chart.ticks == ()


@pytest.mark.parametrize(("micros", "shown"), [
    (0, "$0.000000"), (12_500_000, "$12.500000"), (123, "$0.000123"),
    (1_000_001, "$1.000001"), (-2_500_000, "-$2.500000"), (None, "\u2014")])
def test_money_is_shown_exactly_in_one_format(micros, shown):
    assert usd(micros) == shown
