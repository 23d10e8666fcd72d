"""The Alembic revisions build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import core.models  # noqa: F401  (registers the tables)
from core import db


def test_migrations_match_the_models(db_url: str) -> None:
    engine = db.make_engine(db_url)
    try:
        db.migrate(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        assert diff == [], f"models and migrations disagree; add a revision: {diff}"
    finally:
        engine.dispose()


def test_deleted_ids_are_never_handed_out_again(db_url: str, tmp_path: Path) -> None:
    """A new user must not get a deleted user's id (and so its leftovers); same for images."""
    from core.service import identity, images
    from tests.core.clouds import ADMIN, make_cloud

    cloud = make_cloud(db_url, tmp_path)
    try:
        first = identity.create_user(cloud, ADMIN, name="carol", password="pw")
        image = images.create_image(cloud, ADMIN, text='NAME = "x"\nPATH = "/x.img"')
        identity.delete_user(cloud, ADMIN, user_id=first)
        images.delete_image(cloud, ADMIN, image_id=image)
        assert identity.create_user(cloud, ADMIN, name="dave", password="pw") > first
        assert images.create_image(cloud, ADMIN, text='NAME = "y"\nPATH = "/y.img"') > image
    finally:
        cloud.engine.dispose()


def test_security_group_members_are_filled_from_existing_vms(db_url: str) -> None:
    """Revision 0012 finds the groups of the VMs that have not ended in their templates."""
    from alembic import command
    from alembic.config import Config
    from sqlmodel import Session, select

    from core.models import VM, GroupMember

    engine = db.make_engine(db_url)
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(db.MIGRATIONS))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0011")
        with Session(engine) as s:
            for state, groups in ((1, "3 4"), (3, "4"), (6, "3"), (1, "")):
                text = f'NAME="x"\nSECURITY_GROUPS="{groups}"\n' if groups else 'NAME="x"\n'
                s.add(VM(name="x", uid=0, gid=0, state=state, template=text))
            s.commit()
        db.migrate(engine)
        with Session(engine) as s:
            rows = s.exec(select(GroupMember.vm_id, GroupMember.group_id)).all()
        assert sorted(rows) == [(1, 3), (1, 4), (2, 4)]  # VM 3 is DONE, VM 4 in no group
    finally:
        engine.dispose()
