# The models after a second migration: a unique_together and a unique dropped, a
# column widened, an index dropped, a column with a foreign key added.
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

class Publisher(models.Model):
    name = models.CharField(max_length=50)

class Book(models.Model):
    title = models.CharField(max_length=300)
    author = models.ForeignKey(Author, on_delete=models.PROTECT, related_name="books")
    price = models.DecimalField(max_digits=8, decimal_places=2)
    tags = models.ManyToManyField("Tag", blank=True)
    publisher = models.ForeignKey(Publisher, null=True, on_delete=models.PROTECT)
    pages = models.IntegerField(default=0, db_index=True)

class Tag(models.Model):
    name = models.SlugField(unique=False, max_length=80)

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
