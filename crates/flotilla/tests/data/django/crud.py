# Django ORM work over Flotilla: CRUD, aggregates, joins, transactions, a deferred
# foreign key failing at commit, auth, and the introspection migrations rely on.
import django, datetime, uuid
from decimal import Decimal
django.setup()
from django.db import transaction, IntegrityError, connection
from django.db.models import Count, Sum, Avg, Q, F, ProtectedError
from django.contrib.auth.models import User, Group, Permission
from django.contrib.auth import authenticate
from shop.models import Author, Book, Order, Tag

a = Author.objects.create(name="Ursula", born=datetime.date(1929, 10, 21), aliases=["U. K. Le Guin", "Ursula K."], writes_at=datetime.time(6, 30, 15, 500000))
b = Author.objects.create(name="Iain")
# An array column: stored, read back, and queried with the ArrayField lookups.
assert Author.objects.get(name="Ursula").aliases == ["U. K. Le Guin", "Ursula K."]
assert Author.objects.get(name="Iain").aliases == []
assert [x.name for x in Author.objects.filter(aliases__contains=["Ursula K."])] == ["Ursula"]
assert [x.name for x in Author.objects.filter(aliases__overlap=["nobody", "U. K. Le Guin"])] == ["Ursula"]
assert [x.name for x in Author.objects.filter(aliases__len=2)] == ["Ursula"]
assert [x.name for x in Author.objects.filter(aliases__0="U. K. Le Guin")] == ["Ursula"]
assert Author.objects.filter(aliases=[]).count() == 1
Author.objects.filter(name="Iain").update(aliases=["Iain M. Banks"])
assert Author.objects.get(name="Iain").aliases == ["Iain M. Banks"]
# A time column: stored to the microsecond, compared, and its hour extracted.
assert Author.objects.get(name="Ursula").writes_at == datetime.time(6, 30, 15, 500000)
assert [x.name for x in Author.objects.filter(writes_at__lt=datetime.time(7))] == ["Ursula"]
assert [x.name for x in Author.objects.filter(writes_at__hour=6)] == ["Ursula"]
assert Author.objects.filter(writes_at__isnull=True).count() == 1
# An interval column: a timedelta stored to the microsecond (a negative one too), read
# back, and compared.
Author.objects.filter(name="Ursula").update(pause=datetime.timedelta(days=1, hours=2, minutes=3, seconds=4, microseconds=500000))
Author.objects.filter(name="Iain").update(pause=datetime.timedelta(hours=-1))
assert Author.objects.get(name="Ursula").pause == datetime.timedelta(days=1, seconds=7384, microseconds=500000)
assert Author.objects.get(name="Iain").pause == datetime.timedelta(hours=-1)
assert [x.name for x in Author.objects.filter(pause__gt=datetime.timedelta(hours=1))] == ["Ursula"]
assert [x.name for x in Author.objects.order_by("pause")] == ["Iain", "Ursula"]
t1, t2 = Tag.objects.create(name="sf"), Tag.objects.create(name="classic")
bk = Book.objects.create(title="The Dispossessed", author=a, price=Decimal("12.50"))
bk.tags.add(t1, t2)
Book.objects.bulk_create([Book(title=f"Culture {i}", author=b, price=Decimal(i)) for i in range(1, 6)])
assert Book.objects.count() == 6
assert list(Book.objects.filter(author__name="Iain").order_by("-price").values_list("price", flat=True)[:2]) == [Decimal(5), Decimal(4)]
agg = Book.objects.aggregate(total=Sum("price"), avg=Avg("price"), n=Count("id"))
assert agg["total"] == Decimal("27.50"), agg
counts = dict(Author.objects.values("name").annotate(n=Count("books")).values_list("name", "n"))
assert counts == {"Ursula": 1, "Iain": 5}, counts
# annotate() over the model selects every column and groups by the primary key alone.
annotated = {a.name: a.n for a in Author.objects.annotate(n=Count("books")).filter(n__gt=0)}
assert annotated == {"Ursula": 1, "Iain": 5}, annotated
top = Author.objects.annotate(n=Count("books")).order_by("-n").first()
assert (top.name, top.n) == ("Iain", 5), top
assert [t.name for t in Book.objects.get(title="The Dispossessed").tags.order_by("name")] == ["classic", "sf"]
assert [x.author.name for x in Book.objects.select_related("author").filter(price__gt=4)] 
pre = list(Author.objects.prefetch_related("books").order_by("name"))
assert len(pre[0].books.all()) == 5
Book.objects.filter(author=b).update(price=F("price") * 2)
assert Book.objects.get(title="Culture 5").price == Decimal("10.00")
assert Book.objects.filter(Q(title__startswith="Cult") | Q(price__lt=1)).count() == 5
assert Book.objects.filter(title__icontains="dispo").exists()
# uuid columns: a uuid primary key made by the client, a unique nullable uuid, lookups
# by UUID and by its text, and the uuid type read back by introspection.
voucher = uuid.UUID("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11")
o1 = Order.objects.create(book=bk, voucher=voucher)
o2 = Order.objects.create(book=bk)
assert isinstance(o1.id, uuid.UUID) and o1.id != o2.id
assert Order.objects.get(pk=o1.id).voucher == voucher
assert Order.objects.get(voucher="a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").id == o1.id
assert Order.objects.filter(id__in=[o1.id, o2.id, uuid.uuid4()]).count() == 2
assert Order.objects.filter(voucher__isnull=True).get().id == o2.id
assert [o.id for o in Book.objects.get(pk=bk.pk).orders.order_by("id")] == sorted([o1.id, o2.id])
try:
    with transaction.atomic():
        Order.objects.create(book=bk, voucher=voucher)
    raise SystemExit("duplicate voucher accepted")
except IntegrityError:
    pass
# The partial unique constraint: a second order without a voucher for the book is
# refused, one with a voucher is not, and introspection reads it back as unique.
try:
    with transaction.atomic():
        Order.objects.create(book=bk)
    raise SystemExit("second open order accepted")
except IntegrityError as e:
    assert "order_one_open_per_book" in str(e), e
Order.objects.create(book=bk, voucher=uuid.uuid4()).delete()
with connection.cursor() as c:
    partial = connection.introspection.get_constraints(c, "shop_order")["order_one_open_per_book"]
assert partial["unique"] and partial["columns"] == ["book_id"], partial
with connection.cursor() as c:
    kinds = {d.name: connection.introspection.get_field_type(d.type_code, d)
             for d in connection.introspection.get_table_description(c, "shop_order")}
assert kinds["id"] == "UUIDField" and kinds["voucher"] == "UUIDField", kinds
# A jsonb column: documents written and read back, and the key, containment and key
# existence lookups Django writes for PostgreSQL (->, ->>, #>, @>, ?, ?|, ?&).
assert kinds["details"] == "JSONField", kinds
o1.details = {"gift": True, "lines": [{"sku": "b-1", "qty": 2}], "note": "Ring twice"}
o1.save()
o2.details = {"gift": False, "lines": []}
o2.save()
assert Order.objects.get(pk=o1.pk).details == o1.details
assert Order.objects.get(details__gift=True).pk == o1.pk
assert Order.objects.get(details__contains={"lines": [{"sku": "b-1"}]}).pk == o1.pk
assert Order.objects.get(details__lines__0__qty=2).pk == o1.pk
assert Order.objects.filter(details__has_key="note").get().pk == o1.pk
assert Order.objects.filter(details__has_any_keys=["note", "gift"]).count() == 2
assert Order.objects.filter(details__has_keys=["note", "gift"]).count() == 1
assert Order.objects.filter(details__note__icontains="ring").count() == 1
assert Order.objects.filter(details__lines=[]).get().pk == o2.pk
assert list(Order.objects.filter(pk=o1.pk).values_list("details__lines__0__sku", flat=True)) == ["b-1"]
obj, created = Tag.objects.get_or_create(name="sf")
assert not created
try:
    with transaction.atomic():
        Tag.objects.create(name="sf")
    raise SystemExit("duplicate tag accepted")
except IntegrityError:
    pass
try:
    a.delete()
    raise SystemExit("protected author deleted")
except ProtectedError:
    pass
with transaction.atomic():
    Book.objects.filter(author=b).delete()
    b.delete()
assert Author.objects.count() == 1
# A deferred foreign key: a book of an author who does not exist fails at commit.
try:
    with transaction.atomic():
        Book.objects.create(title="Ghost", author_id=999999, price=1)
    raise SystemExit("dangling reference committed")
except IntegrityError as e:
    assert "foreign key" in str(e), e
u = User.objects.create_user("alice", "a@example.com", "s3cret")
g = Group.objects.create(name="editors")
g.permissions.add(*Permission.objects.filter(codename__endswith="_book"))
u.groups.add(g)
assert authenticate(username="alice", password="s3cret") is not None
assert User.objects.get(username="alice").has_perm("shop.change_book")
with connection.cursor() as c:
    cons = connection.introspection.get_constraints(c, "shop_book")
    rel = connection.introspection.get_relations(c, "shop_book")
    desc = connection.introspection.get_table_description(c, "shop_book")
    seqs = connection.introspection.get_sequences(c, "shop_book")
print("constraints", sorted((k, v["columns"], v["unique"], v["foreign_key"], v["index"]) for k, v in cons.items()))
print("relations", rel)
print("description", [(d.name, d.null_ok, d.default, d.is_autofield) for d in desc])
print("sequences", seqs)
print("ok")
