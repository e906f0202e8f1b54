"""``lsr captions``: a captioned image collection (Flickr8k/30k, COCO) as a BEIR-style directory."""

from __future__ import annotations


def register(sub) -> dict:
    p = sub.add_parser(
        "captions", help="write captioned images (JSONL, Flickr token file, Karpathy JSON) as a BEIR-style directory",
        description="t2i: images are the documents and captions the queries; i2t: the other way round. "
                    "The result feeds lsr encode / index / search / eval and lsr train.")
    p.add_argument("--input", required=True, help="captions JSONL ({image, caption}), a Flickr token file, "
                   "or a Karpathy dataset_*.json")
    p.add_argument("--split", help="token file: a split list (e.g. Flickr_8k.devImages.txt); Karpathy JSON: a split "
                   "name (train, val, test)")
    p.add_argument("--images", help="folder of the images (token file: default images/ beside it; "
                   "Karpathy JSON: default the file's folder)")
    p.add_argument("--output", required=True, help="directory to write")
    p.add_argument("--direction", choices=["t2i", "i2t"], default="t2i")
    p.add_argument("--qrels-split", default="test", help="name of the qrels file (qrels/NAME.tsv)")
    p.add_argument("--overwrite", action="store_true")
    return {"captions": cmd_captions}


def cmd_captions(args) -> int:
    from lsr.captions import read_captions, write_beir

    cs = read_captions(args.input, args.split, args.images)
    out = write_beir(cs, args.output, args.direction, args.qrels_split, args.overwrite)
    what = ("images as documents, captions as queries" if args.direction == "t2i"
            else "captions as documents, images as queries")
    print(f"{len(cs.image_ids)} images, {len(cs.captions)} captions -> {out} ({what})")
    return 0
