# After the second migration: the schema is what the models say, read back the way
# Django's migrations read it.
import django

django.setup()
from django.db import connection
from shop.models import Book, Publisher, Tag

with connection.cursor() as c:
    book = connection.introspection.get_constraints(c, "shop_book")
    tag = connection.introspection.get_constraints(c, "shop_tag")
    c.execute(
        "SELECT character_maximum_length FROM information_schema.columns "
        "WHERE table_name = 'shop_book' AND column_name = 'title'"
    )
    (title_length,) = c.fetchone()
assert not any(v["unique"] and not v["primary_key"] for v in book.values()), book
assert not any(v["unique"] and not v["primary_key"] for v in tag.values()), tag
assert any(v["foreign_key"] == ("shop_publisher", "id") for v in book.values()), book
assert any(v["index"] and v["columns"] == ["pages"] for v in book.values()), book
assert title_length == 300, title_length
p = Publisher.objects.create(name="Ace")
b = Book.objects.get(title="The Dispossessed")
b.publisher, b.title = p, "x" * 300
b.save()
assert Book.objects.filter(publisher__name="Ace").count() == 1
Tag.objects.create(name="sf")  # no longer unique
assert Tag.objects.filter(name="sf").count() == 2
print("ok")
