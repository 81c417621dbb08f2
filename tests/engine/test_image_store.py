"""The ImageStore in this process, on a data root of its own.

The daemon around it is reduced to what the store uses (its config and the
event bus); the store itself, the kernel's overlayfs and the disk are real.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.config import Config
from engine.errors import Conflict, InvalidParameter, NotFound
from engine.events import EventBus
from engine.images.store import ImageStore, chain_id

pytestmark = pytest.mark.root


def layer_tar(files: dict[str, bytes], whiteouts: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000
            tar.addfile(info, io.BytesIO(data))
        for name in whiteouts:
            head, _, base = name.rpartition("/")
            tar.addfile(
                tarfile.TarInfo(f"{head}/.wh.{base}" if head else f".wh.{base}")
            )
    return buf.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    if os.geteuid() != 0:
        pytest.skip("needs root: layers keep owners and device nodes")
    daemon = SimpleNamespace(
        config=Config(data_root=tmp_path / "data"), events=EventBus()
    )
    yield ImageStore(daemon)  # type: ignore[arg-type]


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    points: list[Path] = []
    yield points
    for point in points:
        subprocess.run(["umount", str(point)], check=False, capture_output=True)


def two_layer_image(store: ImageStore) -> tuple[str, str]:
    base = store.add_layer(None, io.BytesIO(layer_tar({"a": b"1", "gone": b"x"})))
    top = store.add_layer(
        base.chain_id, io.BytesIO(layer_tar({"b": b"2"}, whiteouts=("gone",)))
    )
    image = store.create_image(
        {"architecture": "amd64", "os": "linux", "config": {}},
        [base.chain_id, top.chain_id],
    )
    return image.id, top.chain_id


def test_chain_ids_and_layer_reuse(store: ImageStore) -> None:
    data = layer_tar({"same": b"content"})
    first = store.add_layer(None, io.BytesIO(data))
    again = store.add_layer(None, io.BytesIO(data))
    assert first.chain_id == again.chain_id == first.diff_id
    stacked = store.add_layer(first.chain_id, io.BytesIO(data))
    assert stacked.chain_id == chain_id(first.chain_id, first.diff_id)
    assert stacked.chain_id != first.chain_id
    assert len(list(store.layers_dir.iterdir())) == 2


def test_rejected_layer_leaves_nothing_behind(store: ImageStore) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ok = tarfile.TarInfo("fine")
        tar.addfile(ok)
        bad = tarfile.TarInfo("../../escape")
        tar.addfile(bad)
    with pytest.raises(InvalidParameter, match=re.escape("'../../escape'")):
        store.add_layer(None, io.BytesIO(buf.getvalue()))
    assert list(store.layers_dir.iterdir()) == []
    assert list(store.blobs.ingest_dir.iterdir()) == []
    assert list(store.blobs.dir.iterdir()) == []


def test_expected_diff_id_is_checked(store: ImageStore) -> None:
    with pytest.raises(InvalidParameter, match="does not match"):
        store.add_layer(
            None,
            io.BytesIO(layer_tar({"x": b"y"})),
            expected_diff_id="sha256:" + "0" * 64,
        )
    assert list(store.layers_dir.iterdir()) == []


def test_image_mounts_with_short_links(
    store: ImageStore, tmp_path: Path, mounts: list[Path]
) -> None:
    image_id, _ = two_layer_image(store)
    image = store.get(image_id)
    dirs = store.layer_dirs(image)
    assert dirs[0] == store.layer(image.layers[-1]).diff_dir
    base, names = store.lower_links(image)
    merged = tmp_path / "merged"
    merged.mkdir()
    subprocess.run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={':'.join(names)}",
            str(merged),
        ],
        check=True,
        cwd=base,
    )
    mounts.append(merged)
    assert sorted(os.listdir(merged)) == ["a", "b"]


def test_diff_layer_from_a_real_overlay(
    store: ImageStore, tmp_path: Path, mounts: list[Path]
) -> None:
    image_id, top = two_layer_image(store)
    image = store.get(image_id)
    upper, work, merged = (tmp_path / n for n in ("upper", "work", "merged"))
    for d in (upper, work, merged):
        d.mkdir()
    lower = ":".join(str(d) for d in store.layer_dirs(image))
    subprocess.run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={lower},upperdir={upper},workdir={work}",
            str(merged),
        ],
        check=True,
    )
    mounts.append(merged)
    (merged / "a").unlink()
    (merged / "c").write_text("3")
    subprocess.run(["umount", str(merged)], check=True)
    mounts.remove(merged)

    committed = store.commit(
        image, upper, {"Cmd": ["sh"]}, created_by="test", ref="committed:1"
    )
    assert committed.parent == image_id
    assert store.get("committed:1").id == committed.id
    assert len(committed.layers) == 3 and committed.layers[:2] == image.layers
    diff = store.layer(committed.layers[-1]).diff_dir
    assert (diff / "c").read_text() == "3"
    assert os.stat(diff / "a", follow_symlinks=False).st_rdev == 0
    assert committed.config["history"][-1]["created_by"] == "test"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert store.diff_layer(empty, top) is None


def test_create_image_accepts_top_layer_only(store: ImageStore) -> None:
    image_id, top = two_layer_image(store)
    again = store.create_image(
        {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["x"]}}, [top]
    )
    assert again.layers == store.get(image_id).layers


def test_delete_keeps_shared_layers(store: ImageStore) -> None:
    image_id, top = two_layer_image(store)
    store.tag(image_id, "one:1")
    other = store.create_image(
        {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["other"]}},
        [store.get(image_id).layers[0]],
    )
    store.tag(other.id, "two:1")
    records = store.delete("one:1")
    assert records[0] == {"Untagged": "one:1"}
    assert {"Deleted": image_id} in records
    assert {"Deleted": top} in records
    assert store.has_layer(other.layers[0])
    with pytest.raises(NotFound, match="No such image: one:1"):
        store.get("one:1")


def test_delete_conflicts(store: ImageStore) -> None:
    image_id, _ = two_layer_image(store)
    store.tag(image_id, "a:1")
    store.tag(image_id, "b:1")
    with pytest.raises(Conflict, match="must be forced"):
        store.delete(image_id[7:19])
    child = store.create_image(
        {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["child"]}},
        store.get(image_id).layers,
        parent=image_id,
    )
    with pytest.raises(Conflict, match="cannot be forced"):
        store.delete(image_id, force=True)
    records = store.delete(child.id)
    assert records == [{"Deleted": child.id}]


def test_store_reloads_from_disk(store: ImageStore) -> None:
    image_id, _ = two_layer_image(store)
    store.tag(image_id, "localhost:5000/again:2")
    reopened = ImageStore(store.daemon)
    image = reopened.get("localhost:5000/again:2")
    assert image.id == image_id
    assert image.repo_tags == ["localhost:5000/again:2"]
    assert reopened.engine_id() == store.engine_id()


def test_history_walks_parents_and_marks_empty_layers(
    store: ImageStore, tmp_path: Path
) -> None:
    from engine.api.images import history

    base_id, _ = two_layer_image(store)
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "new").write_text("new file")
    first = store.commit(
        store.get(base_id), upper, {"Cmd": ["a"]}, created_by="step one"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    second = store.commit(
        first, empty, {"Cmd": ["b"]}, created_by="step two", comment="no files"
    )
    store.tag(second.id, "hist:1")

    entries = history(store, store.get("hist:1"))
    assert [e["Id"] for e in entries] == [second.id, first.id, base_id, "<missing>"]
    assert entries[0]["CreatedBy"] == "step two" and entries[0]["Size"] == 0
    assert entries[0]["Comment"] == "no files" and entries[0]["Tags"] == ["hist:1"]
    assert entries[1]["Size"] == len("new file") and entries[1]["Tags"] is None
    assert second.config["history"][-1]["empty_layer"] is True


def test_prune_dangling_then_all(store: ImageStore, tmp_path: Path) -> None:
    base_id, _ = two_layer_image(store)
    store.tag(base_id, "base:1")
    empty = tmp_path / "empty"
    empty.mkdir()
    child = store.commit(store.get(base_id), empty, {"Cmd": ["child"]})
    grandchild = store.commit(child, empty, {"Cmd": ["grandchild"]})
    pinned = store.create_image(
        {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["d"]}}, []
    )
    store.tag(pinned.id, "x@sha256:" + "ab" * 32)

    records, _ = store.prune(dangling_only=True)
    deleted = {r["Deleted"] for r in records if "Deleted" in r}
    assert {child.id, grandchild.id, pinned.id} <= deleted
    assert {"Untagged": "x@sha256:" + "ab" * 32} in records
    assert store.exists("base:1")

    records, reclaimed = store.prune(dangling_only=False)
    assert {"Untagged": "base:1"} in records and {"Deleted": base_id} in records
    assert reclaimed > 0 and store.list_images() == []
    assert list(store.layers_dir.iterdir()) == []


def test_reloading_an_image_does_not_pin_its_layers(store: ImageStore) -> None:
    data = layer_tar({"f": b"x"})
    layer = store.add_layer(None, io.BytesIO(data))
    config = {"architecture": "amd64", "os": "linux", "config": {}}
    image = store.create_image(config, [layer.chain_id])
    again = store.add_layer(None, io.BytesIO(data), expected_diff_id=layer.diff_id)
    assert store.create_image(config, [again.chain_id]).id == image.id
    assert {"Deleted": layer.chain_id} in store.delete(image.id)
    assert list(store.layers_dir.iterdir()) == []
