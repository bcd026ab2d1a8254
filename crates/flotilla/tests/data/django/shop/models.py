# The first models: a unique column, a foreign key, a many-to-many, a unique_together.
import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models

class Author(models.Model):
    name = models.CharField(max_length=100, unique=True)
    born = models.DateField(null=True)
    # A varchar(50)[] column.
    aliases = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    # A time column.
    writes_at = models.TimeField(null=True)
    # An interval column.
    pause = models.DurationField(null=True)

class Book(models.Model):
    title = models.CharField(max_length=200, db_index=True)
    author = models.ForeignKey(Author, on_delete=models.PROTECT, related_name="books")
    price = models.DecimalField(max_digits=8, decimal_places=2)
    tags = models.ManyToManyField("Tag", blank=True)
    class Meta:
        unique_together = [("title", "author")]

class Tag(models.Model):
    name = models.SlugField(unique=True)

class Order(models.Model):
    # A uuid primary key, as Django's docs suggest for public identifiers.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    book = models.ForeignKey(Book, on_delete=models.CASCADE, related_name="orders")
    voucher = models.UUIDField(null=True, unique=True)
    # A jsonb column.
    details = models.JSONField(default=dict)
    class Meta:
        # A partial unique index (CREATE UNIQUE INDEX ... WHERE): one order without a
        # voucher per book, any number with one.
        constraints = [models.UniqueConstraint(
            fields=["book"], condition=models.Q(voucher__isnull=True),
            name="order_one_open_per_book")]
