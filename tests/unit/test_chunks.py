from hypothesis import given
from hypothesis import strategies as st

from credit_common.db.chunks import CHUNK, chunks


@given(values=st.lists(st.integers(), max_size=2_100), size=st.integers(1, 700))
def test_chunks_are_the_values_in_order_none_longer_than_size_and_only_the_last_shorter(values, size):
    sliced = list(chunks(values, size))
    assert [v for chunk in sliced for v in chunk] == values
    assert all(len(chunk) == size for chunk in sliced[:-1])
    assert all(0 < len(chunk) <= size for chunk in sliced)


def test_the_default_size_is_one_in_list():
    assert [len(c) for c in chunks(list(range(2 * CHUNK + 1)))] == [CHUNK, CHUNK, 1]
    assert list(chunks([])) == []
