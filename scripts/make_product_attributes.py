"""Builds examples/product_attributes from the Walmart-Amazon product pairs in
../shared/data/autolabel_walmart_amazon: every distinct product title whose category is one of
eight clearly named categories and whose brand is written in the title, with its brand and
category as ground truth. Deterministic (fixed shuffle seed); writes seed.csv (40 rows) and
test.csv (the rest)."""
import csv, pathlib, random, sys

CATEGORIES = [
    "projection screens", "mice", "printers", "inkjet printer ink", "external hard drives",
    "point shoot digital cameras", "usb flash drives", "laser printer toner",
]
root = pathlib.Path(__file__).resolve().parent.parent
src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else root.parent / "shared/data/autolabel_walmart_amazon")
out = root / "examples/product_attributes"
items = {}
for name in ["test.csv", "seed.csv"]:
    for r in csv.DictReader(open(src / name, newline="")):
        for e in ("entity1", "entity2"):
            title, cat, brand = r["Title_" + e].strip(), r["Category_" + e].strip(), r["Brand_" + e].strip()
            if cat in CATEGORIES and brand and brand != "nan" and brand in title:
                items.setdefault(title, (brand, cat))
rows = sorted(items.items())
random.Random(20261128).shuffle(rows)
out.mkdir(parents=True, exist_ok=True)
for name, part in [("seed.csv", rows[:40]), ("test.csv", rows[40:])]:
    with open(out / name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["title", "brand", "category"])
        for title, (brand, cat) in part:
            w.writerow([title, brand, cat])
print(f"{len(rows)} products: 40 seed, {len(rows) - 40} test -> {out}")
