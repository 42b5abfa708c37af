"""The first tables: products (metadata, attributes, image content hash), the change log, the revision.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    state = op.create_table(
        "catalog_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.bulk_insert(state, [{"id": 1, "revision": 0, "updated_at": None}])
    op.create_table(
        "products",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("category", sa.String(200), nullable=False),
        sa.Column("sub_category", sa.String(200), nullable=False),
        sa.Column("brand", sa.String(200), nullable=False),
        sa.Column("colour", sa.String(200), nullable=False),
        sa.Column("price", sa.Float, nullable=True),
        sa.Column("image", sa.Text, nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=True),
        sa.Column("image_ext", sa.String(8), nullable=True),
        sa.Column("image_problem", sa.Text, nullable=True),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
    )
    op.create_index("ix_products_category", "products", ["category"])
    op.create_index("ix_products_brand", "products", ["brand"])
    op.create_table(
        "changes",
        sa.Column("revision", sa.Integer, primary_key=True),
        sa.Column("product_id", sa.String(200), primary_key=True),
        sa.Column("op", sa.String(8), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("changes")
    op.drop_index("ix_products_brand", "products")
    op.drop_index("ix_products_category", "products")
    op.drop_table("products")
    op.drop_table("catalog_state")
