"""The folded backend's parallel streams: a batch split over threads gives the numbers of one stream."""

from __future__ import annotations

import threading

import pytest
import torch

from memseg_lite.deployment.fast import EagerBackend, FoldedTorchBackend, eager_selection
from memseg_lite.network.model import build_memseg


@pytest.fixture(scope="module")
def model_and_images():
    generator = torch.Generator().manual_seed(2)
    model = build_memseg(torch.randn(5, 3, 64, 64, generator=generator), backbone_weights="none", device="cpu",
                         seed=2).eval()
    with torch.no_grad():
        model.decoder.head.weight.mul_(300.0)  # maps that spread over [0, 1]
    return model, torch.randn(7, 3, 64, 64, generator=generator)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def test_streams_give_the_numbers_of_a_single_stream(model_and_images, two_threads):
    model, images = model_and_images
    single = FoldedTorchBackend(model, {}, torch.device("cpu"), streams=1)
    parallel = FoldedTorchBackend(model, {}, torch.device("cpu"))
    reference_maps, _ = EagerBackend(model, {}, torch.device("cpu"))(images)
    for count in (1, 2, 3, 5, 7):
        batch = images[:count]
        maps, scores = parallel(batch)
        expected_maps, expected_scores = single(batch)
        torch.testing.assert_close(maps, expected_maps, rtol=0, atol=1e-6)
        torch.testing.assert_close(scores, expected_scores, rtol=0, atol=1e-6)
        assert torch.equal(parallel.last_indices, eager_selection(model, batch))
        assert float((maps - reference_maps[:count]).abs().max()) < 1e-4
    assert parallel.exact_selections == single.exact_selections  # near ties counted from every stream


def test_how_many_streams_a_batch_gets(model_and_images, two_threads):
    model, _ = model_and_images
    backend = FoldedTorchBackend(model, {}, torch.device("cpu"))  # chunks of 2
    assert [backend.streams_for(n) for n in (1, 2, 3, 4, 8)] == [1, 1, 2, 2, 2]
    assert FoldedTorchBackend(model, {}, torch.device("cpu"), streams=1).streams_for(8) == 1
    assert FoldedTorchBackend(model, {}, torch.device("cpu"), chunk_size=None).streams_for(8) == 1  # whole batches
    assert FoldedTorchBackend(model, {}, torch.device("cpu"), chunk_size=1, streams=4).streams_for(8) == 2  # <= threads
    torch.set_num_threads(1)
    assert backend.streams_for(8) == 1
    with pytest.raises(ValueError, match="streams must be an integer >= 1"):
        FoldedTorchBackend(model, {}, torch.device("cpu"), streams=0)


def test_streams_leave_the_thread_settings_as_they_were(model_and_images, two_threads):
    model, images = model_and_images
    backend = FoldedTorchBackend(model, {}, torch.device("cpu"))
    backend(images)
    assert torch.get_num_threads() == 2
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))  # a thread started afterwards
    thread.start()
    thread.join()
    assert seen == [2]


def test_close_stops_the_stream_threads_and_the_next_batch_starts_them_again(model_and_images, two_threads):
    model, images = model_and_images
    backend = FoldedTorchBackend(model, {}, torch.device("cpu"))
    first, _ = backend(images)
    names = {thread.name for thread in threading.enumerate()}
    assert any(name.startswith("memseg-stream") for name in names)
    backend.close()
    assert backend._pool is None
    again, _ = backend(images)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    backend.close()
