// Drives the AWS SDK for JavaScript v3 against the S3 API: ENDPOINT, KEY, SECRET from the
// environment; prints one JSON object of what it saw (the Python test asserts on it).
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import {
  S3Client, CreateBucketCommand, PutObjectCommand, HeadObjectCommand, GetObjectCommand,
  ListObjectsV2Command, CreateMultipartUploadCommand, UploadPartCommand, CompleteMultipartUploadCommand,
  CopyObjectCommand, DeleteObjectsCommand, DeleteBucketCommand, ListObjectsCommand,
} from "@aws-sdk/client-s3";

const s3 = new S3Client({
  endpoint: process.env.ENDPOINT, region: "us-east-1", forcePathStyle: true,
  credentials: { accessKeyId: process.env.KEY, secretAccessKey: process.env.SECRET },
});
const md5 = (b) => createHash("md5").update(b).digest("hex");
const bytes = async (body) => Buffer.from(await body.transformToByteArray());
const out = {};
const Bucket = "nodesdk";

await s3.send(new CreateBucketCommand({ Bucket }));
const small = Buffer.from("hello from node");
out.putEtag = (await s3.send(new PutObjectCommand({ Bucket, Key: "a/hello.txt", Body: small }))).ETag;
out.smallMd5 = md5(small);
const big = Buffer.alloc(6 * 1024 * 1024 + 11);
for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 251;
// a stream of known length: the SDK sends it aws-chunked with a checksum trailer
await s3.send(new PutObjectCommand({ Bucket, Key: "a/big.bin", Body: Readable.from([big]), ContentLength: big.length }));
const head = await s3.send(new HeadObjectCommand({ Bucket, Key: "a/big.bin" }));
out.bigHead = { etag: head.ETag, length: head.ContentLength };
out.bigMd5 = md5(big);
const ranged = await s3.send(new GetObjectCommand({ Bucket, Key: "a/big.bin", Range: "bytes=100-199" }));
out.rangeOk = (await bytes(ranged.Body)).equals(big.subarray(100, 200));
const listed = await s3.send(new ListObjectsV2Command({ Bucket, Delimiter: "/" }));
out.prefixes = (listed.CommonPrefixes || []).map((p) => p.Prefix);
const up = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key: "m/joined.bin" }));
const p1 = big.subarray(0, 5 * 1024 * 1024), p2 = big.subarray(5 * 1024 * 1024);
const e1 = (await s3.send(new UploadPartCommand({ Bucket, Key: "m/joined.bin", UploadId: up.UploadId, PartNumber: 1, Body: p1 }))).ETag;
const e2 = (await s3.send(new UploadPartCommand({ Bucket, Key: "m/joined.bin", UploadId: up.UploadId, PartNumber: 2, Body: p2 }))).ETag;
const done = await s3.send(new CompleteMultipartUploadCommand({
  Bucket, Key: "m/joined.bin", UploadId: up.UploadId,
  MultipartUpload: { Parts: [{ PartNumber: 1, ETag: e1 }, { PartNumber: 2, ETag: e2 }] },
}));
out.multipartEtag = done.ETag;
out.multipartOk = (await bytes((await s3.send(new GetObjectCommand({ Bucket, Key: "m/joined.bin" }))).Body)).equals(big);
await s3.send(new CopyObjectCommand({ Bucket, Key: "c/copy.txt", CopySource: `${Bucket}/a/hello.txt` }));
out.copyOk = (await bytes((await s3.send(new GetObjectCommand({ Bucket, Key: "c/copy.txt" }))).Body)).equals(small);
const v1 = await s3.send(new ListObjectsCommand({ Bucket }));
out.keys = (v1.Contents || []).map((o) => o.Key);
const del = await s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: out.keys.map((Key) => ({ Key })) } }));
out.deleted = (del.Deleted || []).length;
await s3.send(new DeleteBucketCommand({ Bucket }));
out.bucketDeleted = true;
console.log(JSON.stringify(out));
