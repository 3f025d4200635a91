/*
** make_seeds.c — writes the seed corpus of every fuzz harness with the project's own writers
** (`make fuzz` runs it): make_seeds DIR creates DIR/<harness>/seed-* for each harness.
**
** The models are small (dim 16, 2 layers, vocab 32) so each seed is a few KB and an input
** runs in well under a millisecond. Formats without a writer in the project (tokenizer.bin,
** hand-written tokenizer.json pipelines of the Llama-2 and Qwen3 kinds) are written here
** from their specifications in src/data/tokenizer.h. Multi-file inputs join their parts with
** FUZZ_PART_SEP, in the order the harness reads them.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/ane/kernels.h"
#include "backend/ane/mil_write.h"
#include "data/bpe_train.h"
#include "data/tokfile.h"
#include "fuzz_common.h"
#include "io/model_file.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "model/lora.h"
#include "train/checkpoint.h"
#include "util/fileio.h"
#include "util/rng.h"

static const char *root;
static char scratch[1024];
static int seeds_written;

static void die(const char *what, const Err *err) {
    fprintf(stderr, "make_seeds: %s: %s\n", what, err ? err->msg : "failed");
    exit(1);
}

/* root/harness/name <- data */
static void put_seed(const char *harness, const char *name, const void *data, size_t n) {
    char dir[1100], path[1200];
    Err err;
    snprintf(dir, sizeof dir, "%s/%s", root, harness);
    if (dir_ensure(dir, &err) != 0) die(dir, &err);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp || (n && fwrite(data, 1, n, fp) != n) || fclose(fp) != 0) die(path, NULL);
    seeds_written++;
}

static const char *tmp(const char *name) {
    static char bufs[4][1200];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", scratch, name);
    return b;
}

/* The file at path (or NULL with *n = 0 when there is none). */
static char *slurp(const char *path, size_t *n) {
    Err err;
    *n = 0;
    if (!path_exists(path)) return NULL;
    char *p = file_read_all(path, n, &err);
    if (!p) die(path, &err);
    return p;
}

static void put_file_seed(const char *harness, const char *name, const char *path) {
    size_t n;
    char *p = slurp(path, &n);
    if (!p) die(path, NULL);
    put_seed(harness, name, p, n);
    free(p);
}

/* The files of dir named in names (an absent one is an empty part), joined by FUZZ_PART_SEP. */
static void put_parts_seed(const char *harness, const char *name, const char *dir, const char *const *names, int n) {
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    for (int i = 0; i < n && out; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        size_t k;
        char *p = slurp(path, &k);
        size_t need = len + k + strlen(FUZZ_PART_SEP) + 1;
        if (need > cap) {
            while (cap < need) cap *= 2;
            out = realloc(out, cap);
            if (!out) break;
        }
        if (i > 0) {
            memcpy(out + len, FUZZ_PART_SEP, strlen(FUZZ_PART_SEP));
            len += strlen(FUZZ_PART_SEP);
        }
        if (k) memcpy(out + len, p, k);
        len += k;
        free(p);
    }
    if (!out) die("out of memory", NULL);
    put_seed(harness, name, out, len);
    free(out);
}

/* ---------------------------------------------------------------- models */

static ModelConfig micro_llama(void) { /* the model fuzz_peft.c loads adapters for */
    return (ModelConfig){FAMILY_LLAMA, 16, 32, 2, 2, 2, 8, 32, 32, 10000.0f, 1e-5f, 0, 1, ROPE_INTERLEAVED};
}

static ModelConfig micro_qwen3(void) {
    return (ModelConfig){FAMILY_QWEN3, 16, 24, 2, 4, 2, 8, 40, 64, 1e6f, 1e-6f, 1, 0, ROPE_HALF};
}

static float *micro_params(const ModelConfig *cfg, ParamLayout *layout, uint64_t seed) {
    params_layout(layout, cfg);
    float *p = malloc(layout->n_floats * sizeof *p);
    if (!p) die("out of memory", NULL);
    Rng rng;
    rng_seed(&rng, seed);
    params_init(layout, p, &rng);
    return p;
}

static void model_seeds(void) {
    Err err;
    ModelConfig cfgs[2] = {micro_llama(), micro_qwen3()};
    const char *tags[2] = {"llama", "qwen3"};
    for (int k = 0; k < 2; k++) {
        ParamLayout layout;
        float *p = micro_params(&cfgs[k], &layout, 7 + (uint64_t)k);
        char name[64];
        /* HF config.json and directory */
        const char *dir = tmp(tags[k]);
        if (hf_save(dir, &layout, p, &err) != 0) die("hf_save", &err);
        snprintf(name, sizeof name, "%s.json", tags[k]);
        char cfg_path[1200];
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
        put_file_seed("hf_config", name, cfg_path);
        static const char *const hf_names[] = {"config.json", "model.safetensors"};
        snprintf(name, sizeof name, "%s-dir", tags[k]);
        put_parts_seed("hf_dir", name, dir, hf_names, 2);
        char st_path[1200];
        snprintf(st_path, sizeof st_path, "%s/model.safetensors", dir);
        snprintf(name, sizeof name, "%s-model.safetensors", tags[k]);
        put_file_seed("safetensors", name, st_path);
        if (k == 1) { /* the same tensors in two shards with an index */
            StFile f;
            if (st_open(&f, st_path, &err) != 0) die("st_open", &err);
            StWriteTensor *w = calloc((size_t)f.n_tensors, sizeof *w);
            float **vals = calloc((size_t)f.n_tensors, sizeof *vals);
            char index[8192];
            int at = snprintf(index, sizeof index, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
            for (int i = 0; i < f.n_tensors; i++) {
                const StTensor *t = &f.tensors[i];
                size_t numel = 1;
                for (int d = 0; d < t->rank; d++) numel *= (size_t)t->shape[d];
                vals[i] = malloc(numel * sizeof(float));
                if (st_read_f32(&f, t, vals[i], numel, &err) != 0) die("st_read_f32", &err);
                w[i] = (StWriteTensor){t->name, vals[i], t->rank, {0}};
                memcpy(w[i].shape, t->shape, sizeof t->shape);
                at += snprintf(index + at, sizeof index - (size_t)at, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"",
                               i ? ", " : "", t->name, i < f.n_tensors / 2 ? 1 : 2);
            }
            snprintf(index + at, sizeof index - (size_t)at, "}}\n");
            const char *sdir = tmp("sharded");
            if (dir_ensure(sdir, &err) != 0) die(sdir, &err);
            char path[1200];
            snprintf(path, sizeof path, "%s/config.json", sdir);
            if (hf_config_save(path, &layout.cfg, &err) != 0) die("hf_config_save", &err);
            int half = f.n_tensors / 2;
            snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", sdir);
            if (st_write_f32(path, w, half, NULL, &err) != 0) die("st_write_f32", &err);
            snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", sdir);
            if (st_write_f32(path, w + half, f.n_tensors - half, NULL, &err) != 0) die("st_write_f32", &err);
            snprintf(path, sizeof path, "%s/model.safetensors.index.json", sdir);
            FILE *fp = fopen(path, "w");
            if (!fp || fputs(index, fp) < 0 || fclose(fp) != 0) die(path, NULL);
            static const char *const shard_names[] = {"config.json", "model.safetensors", "model.safetensors.index.json",
                                                      "model-00001-of-00002.safetensors",
                                                      "model-00002-of-00002.safetensors"};
            put_parts_seed("hf_dir", "qwen3-sharded", sdir, shard_names, 5);
            for (int i = 0; i < f.n_tensors; i++) free(vals[i]);
            free(vals);
            free(w);
            st_close(&f);
        }
        /* llama2.c .bin: llama only (it cannot hold Qwen3); tied, and untied */
        if (k == 0) {
            if (llama2c_save(tmp("m.bin"), &layout, p, &err) != 0) die("llama2c_save", &err);
            put_file_seed("llama2c", "tied.bin", tmp("m.bin"));
            ModelConfig untied = cfgs[0];
            untied.tied = 0;
            ParamLayout lu;
            float *pu = micro_params(&untied, &lu, 9);
            if (llama2c_save(tmp("u.bin"), &lu, pu, &err) != 0) die("llama2c_save", &err);
            put_file_seed("llama2c", "untied.bin", tmp("u.bin"));
            free(pu);
        }
        /* checkpoints: with moments and a training state, and parameters only */
        float *m = calloc(layout.n_floats, sizeof *m), *v = calloc(layout.n_floats, sizeof *v);
        for (size_t i = 0; i < layout.n_floats; i++) m[i] = p[i] * 0.01f, v[i] = p[i] * p[i];
        TrainState st;
        memset(&st, 0, sizeof st);
        st.step = 12;
        st.tokens_seen = 12 * 64;
        rng_seed(&st.rng, 3);
        rng_seed(&st.loader.rng, 4);
        st.loader.rows = 24;
        st.loss_scale = 65536.0f;
        st.clean_steps = 5;
        st.skipped_steps = 1;
        snprintf(name, sizeof name, "%s-moments.ckpt", tags[k]);
        if (ckpt_save(tmp("c.ckpt"), &layout, p, m, v, &st, &err) != 0) die("ckpt_save", &err);
        put_file_seed("checkpoint", name, tmp("c.ckpt"));
        snprintf(name, sizeof name, "%s-params.ckpt", tags[k]);
        if (ckpt_save(tmp("c.ckpt"), &layout, p, NULL, NULL, NULL, &err) != 0) die("ckpt_save", &err);
        put_file_seed("checkpoint", name, tmp("c.ckpt"));
        /* LoRA: a PEFT adapter directory (for the llama model, which fuzz_peft.c uses) and a training state */
        LoraConfig lc = {2, 4.0f, k ? 0.1f : 0.0f, k, k ? 0x7fu : 0x5u}; /* q,v; or all seven */
        LoraLayout lo;
        if (lora_layout(&lo, &cfgs[k], &lc, "make_seeds", &err) != 0) die("lora_layout", &err);
        float *ad = malloc(lo.n_floats * sizeof *ad), *am = calloc(lo.n_floats, sizeof *am),
              *av = calloc(lo.n_floats, sizeof *av);
        Rng rng;
        rng_seed(&rng, 5);
        lora_init(&lo, ad, &rng);
        for (size_t i = 0; i < lo.n_floats; i++) ad[i] += 0.001f * (float)(i % 7), am[i] = 1e-3f, av[i] = 1e-6f;
        if (k == 0) {
            const char *adir = tmp("adapter");
            if (lora_save(adir, &lo, ad, "stories-micro", &err) != 0) die("lora_save", &err);
            static const char *const peft_names[] = {"adapter_config.json", "adapter_model.safetensors"};
            put_parts_seed("peft", "qv", adir, peft_names, 2);
            LoraConfig all = {4, 8.0f, 0.05f, 1, 0x7fu};
            LoraLayout lo2;
            if (lora_layout(&lo2, &cfgs[0], &all, "make_seeds", &err) != 0) die("lora_layout", &err);
            float *ad2 = calloc(lo2.n_floats, sizeof *ad2);
            lora_init(&lo2, ad2, &rng);
            if (lora_save(tmp("adapter2"), &lo2, ad2, NULL, &err) != 0) die("lora_save", &err);
            put_parts_seed("peft", "all-rslora", tmp("adapter2"), peft_names, 2);
            free(ad2);
        }
        LoraRunState rs;
        memset(&rs, 0, sizeof rs);
        rs.base = cfgs[k];
        rs.base_crc32 = ckpt_crc32_words(p, layout.n_floats);
        rs.lora = lc;
        rs.int8 = k;
        rs.seed = 1337;
        rs.batch = 2;
        rs.seq = 16;
        rs.accum = 1;
        rs.order = ORDER_RANDOM;
        rs.val_frac = 0.1;
        rs.train_tokens = 1000;
        rs.train_crc32 = 0x1234567u;
        rs.state = st;
        snprintf(name, sizeof name, "%s.ckpt", tags[k]);
        if (lora_state_save(tmp("s.ckpt"), &rs, ad, am, av, lo.n_floats, &err) != 0) die("lora_state_save", &err);
        put_file_seed("lora_state", name, tmp("s.ckpt"));
        free(ad), free(am), free(av), free(m), free(v), free(p);
    }
    /* a safetensors file with metadata, an empty tensor and a scalar */
    float a[6] = {1, -2, 0.5f, 3e-38f, 1e30f, -0.0f}, b[1] = {7};
    StWriteTensor w[3] = {{"a.weight", a, 2, {2, 3}}, {"b", b, 0, {0}}, {"empty", a, 1, {0}}};
    const char *meta[] = {"format", "pt", "note", "seed", NULL};
    if (st_write_f32(tmp("x.safetensors"), w, 3, meta, &err) != 0) die("st_write_f32", &err);
    put_file_seed("safetensors", "meta.safetensors", tmp("x.safetensors"));
    /* HF configs of the presets */
    static const char *const presets[] = {"stories15m", "qwen3-0.6b"};
    for (int i = 0; i < 2; i++) {
        ModelConfig c;
        if (config_from_preset(&c, presets[i], &err) != 0) die("preset", &err);
        if (hf_config_save(tmp("p.json"), &c, &err) != 0) die("hf_config_save", &err);
        char name[64];
        snprintf(name, sizeof name, "%s.json", presets[i]);
        put_file_seed("hf_config", name, tmp("p.json"));
    }
}

/* ---------------------------------------------------------------- tokens and tokenizers */

static void token_seeds(void) {
    Err err;
    int32_t ids[64];
    for (int i = 0; i < 64; i++) ids[i] = i % 8 == 0 ? 1 : (i * 37) % 500;
    if (tokfile_save(tmp("t.bin"), ids, 64, 0, 2, 0, &err) != 0) die("tokfile_save", &err);
    put_file_seed("tokfile", "raw.bin", tmp("t.bin"));
    if (tokfile_save(tmp("t.bin"), ids, 64, 1, 2, 512, &err) != 0) die("tokfile_save", &err);
    put_file_seed("tokfile", "anetok2.bin", tmp("t.bin"));
    ids[5] = 151000;
    if (tokfile_save(tmp("t.bin"), ids, 64, 1, 4, 151936, &err) != 0) die("tokfile_save", &err);
    put_file_seed("tokfile", "anetok4.bin", tmp("t.bin"));
    put_seed("tokfile", "text.txt", "Once upon a time there was a little girl.\n", 42);

    /* tokenizer.json learned by the project's BPE trainer */
    BpeTrainOptions o;
    bpe_train_defaults(&o, 300);
    BpeTrainer *bt;
    if (bpe_trainer_new(&o, &bt, &err) != 0) die("bpe_trainer_new", &err);
    static const char text[] = "the cat sat on the mat. the dog sat on the log. caf\xc3\xa9 na\xc3\xafve \xe4\xb8\xad\xe6\x96\x87";
    for (int i = 0; i < 3; i++)
        if (bpe_trainer_add(bt, text, sizeof text - 1, &err) != 0) die("bpe_trainer_add", &err);
    BpeTrainStats st;
    if (bpe_trainer_train(bt, &st, &err) != 0) die("bpe_trainer_train", &err);
    char *json = bpe_trainer_json(bt, &err);
    if (!json) die("bpe_trainer_json", &err);
    put_seed("tokenizer_json", "bpe-trained.json", json, strlen(json));
    free(json);
    bpe_trainer_free(bt);
    /* the other pipelines tokenizer.h supports, written by hand */
    static const char qwen_like[] =
        "{\"added_tokens\": [{\"id\": 9, \"content\": \"<|im_start|>\", \"special\": true}, {\"id\": 10, \"content\": "
        "\"<|endoftext|>\", \"special\": true}], \"normalizer\": {\"type\": \"NFC\"}, \"pre_tokenizer\": {\"type\": "
        "\"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": "
        "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|"
        "\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": "
        "\"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": false, \"use_regex\": false}]}, "
        "\"post_processor\": {\"type\": \"ByteLevel\"}, \"decoder\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": "
        "\"BPE\", \"ignore_merges\": false, \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"\\u0120\": 3, \"\\u0120a\": 4, "
        "\"ab\": 5, \"abc\": 6, \"!\": 7, \"\\u010a\": 8}, \"merges\": [\"\\u0120 a\", \"a b\", [\"ab\", \"c\"]]}}";
    put_seed("tokenizer_json", "qwen-like.json", qwen_like, sizeof qwen_like - 1);
    static const char llama_like[] =
        "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true}, {\"id\": 1, \"content\": \"<s>\", "
        "\"special\": true}, {\"id\": 2, \"content\": \"</s>\", \"special\": true}], \"normalizer\": {\"type\": "
        "\"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\\u2581\"}, {\"type\": \"Replace\", "
        "\"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]}, \"pre_tokenizer\": null, \"post_processor\": "
        "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, "
        "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": "
        "[1], \"tokens\": [\"<s>\"]}}}, \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", "
        "\"pattern\": {\"String\": \"\\u2581\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": "
        "\"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]}, \"model\": {\"type\": "
        "\"BPE\", \"byte_fallback\": true, \"fuse_unk\": true, \"unk_token\": \"<unk>\", \"vocab\": {\"<unk>\": 0, "
        "\"<s>\": 1, \"</s>\": 2, \"<0x0A>\": 3, \"<0xFF>\": 4, \"\\u2581\": 5, \"a\": 6, \"b\": 7, \"\\u2581a\": 8, "
        "\"ab\": 9, \"\\u2581ab\": 10}, \"merges\": [\"\\u2581 a\", \"a b\", \"\\u2581a b\"]}}";
    put_seed("tokenizer_json", "llama-like.json", llama_like, sizeof llama_like - 1);
    static const char metaspace[] =
        "{\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"first\", "
        "\"split\": true}, \"decoder\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": "
        "\"always\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"\\u2581\": 0, \"a\": 1, \"\\u2581a\": 2, \"b\": 3}, "
        "\"merges\": [\"\\u2581 a\"]}}";
    put_seed("tokenizer_json", "metaspace.json", metaspace, sizeof metaspace - 1);

    /* tokenizer.bin (llama2.c): int32 max_token_length; per token f32 score, int32 length, bytes */
    static const char *const pieces[] = {"<unk>", "<s>", "</s>", "<0x0A>", " ", "a", "b", "c", " a", "ab", "abc", " ab"};
    uint8_t bin[1024];
    size_t at = 0;
    int32_t maxlen = 6;
    memcpy(bin, &maxlen, 4), at = 4;
    for (int i = 0; i < 12; i++) {
        float score = i < 4 ? 0.0f : -(float)i;
        int32_t len = (int32_t)strlen(pieces[i]);
        memcpy(bin + at, &score, 4), memcpy(bin + at + 4, &len, 4), memcpy(bin + at + 8, pieces[i], (size_t)len);
        at += 8 + (size_t)len;
    }
    put_seed("tokenizer_bin", "small.bin", bin, at);
}

/* ---------------------------------------------------------------- MIL, metrics */

/* The text, then one part per blob: path, NUL, bytes. */
static void put_mil_seed(const char *name, const char *mil, const AneBlob *blobs, int n) {
    size_t len = strlen(mil), cap = len + 64;
    for (int i = 0; i < n; i++) cap += strlen(FUZZ_PART_SEP) + strlen(blobs[i].path) + 1 + blobs[i].size;
    char *out = malloc(cap);
    if (!out) die("out of memory", NULL);
    memcpy(out, mil, len);
    for (int i = 0; i < n; i++) {
        memcpy(out + len, FUZZ_PART_SEP, strlen(FUZZ_PART_SEP)), len += strlen(FUZZ_PART_SEP);
        memcpy(out + len, blobs[i].path, strlen(blobs[i].path) + 1), len += strlen(blobs[i].path) + 1;
        memcpy(out + len, blobs[i].data, blobs[i].size), len += blobs[i].size;
    }
    put_seed("mil", name, out, len);
    free(out);
}

static void mil_seeds(void) {
    Err err;
    ModelConfig cfgs[2] = {micro_llama(), micro_qwen3()};
    for (int k = 0; k < 2; k++) {
        AneLayerPlan plan;
        if (ane_plan_layer_lora(&plan, &cfgs[k], 32, k ? 2 : 0, 0x5u, &err) != 0) die("ane_plan_layer", &err);
        for (int bwd = 0; bwd < 2; bwd++) {
            char *mil;
            AneBlob *blobs;
            int n;
            if ((bwd ? ane_kernel_bwd : ane_kernel_fwd)(&plan, &mil, &blobs, &n, &err) != 0) die("ane_kernel", &err);
            char name[64];
            snprintf(name, sizeof name, "%s-%s.mil", k ? "qwen3-lora" : "llama", bwd ? "bwd" : "fwd");
            put_mil_seed(name, mil, blobs, n);
            free(mil);
            milw_free_blobs(blobs, n);
        }
    }
    static const char small[] =
        "program(1.3)\n"
        "{\n"
        "    func main<ios18>(tensor<fp16, [1, 4, 1, 32]> x) {\n"
        "        tensor<fp16, [1, 4, 1, 32]> y = sigmoid(x = x)[name = string(\"y\")];\n"
        "    } -> (y);\n"
        "}\n";
    put_mil_seed("sigmoid.mil", small, NULL, 0);
}

static void metrics_seeds(void) {
    static const char train[] =
        "{\"step\": 1, \"loss\": 6.2383861541748047, \"lr\": 5e-05, \"grad_norm\": 1.23, \"tokens\": 256, \"ms\": 12.5}\n"
        "{\"step\": 2, \"loss\": 6.1, \"lr\": 0.0001, \"grad_norm\": null, \"tokens\": 512, \"ms\": 11.9, \"loss_scale\": "
        "65536, \"skipped\": true}\n"
        "{\"step\": 3, \"loss\": 5.9, \"lr\": 0.00015, \"grad_norm\": 0.9, \"tokens\": 768, \"ms\": 12, \"val_loss\": 6.0}\n"
        "\n"
        "{\"step\": 2, \"loss\": 6.05}\n";
    put_seed("metrics_log", "train.jsonl", train, sizeof train - 1);
    static const char finetune[] = "{\"step\": 0, \"val_loss\": 2.5}\n{\"step\": 1, \"loss\": 2.4, \"val_loss\": 2.45}\n";
    put_seed("metrics_log", "finetune.jsonl", finetune, sizeof finetune - 1);
}

static void examples_seeds(void) {
    static const char text[] = "{\"text\": \"Once upon a time\"}\n\n{\"text\": \"a\\u00e9\\n\"}\n";
    put_seed("examples", "text.jsonl", text, sizeof text - 1);
    static const char pc[] = "{\"prompt\": \"The captain\", \"completion\": \" waited.\"}\r\n"
                             "{\"prompt\": \"\", \"completion\": \"x\", \"extra\": [1, {}]}\n";
    put_seed("examples", "completion.jsonl", pc, sizeof pc - 1);
    static const char chat[] =
        "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": "
        "\"Hi\"}, {\"role\": \"assistant\", \"content\": \"<think>x</think>Hello\"}]}\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"a much longer question than the first\"}]}\n";
    put_seed("examples", "chat.jsonl", chat, sizeof chat - 1);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds DIR\n");
        return 2;
    }
    root = argv[1];
    Err err;
    if (dir_ensure(root, &err) != 0) die(root, &err);
    snprintf(scratch, sizeof scratch, "%s/.scratch", root);
    path_remove_tree(scratch);
    if (dir_ensure(scratch, &err) != 0) die(scratch, &err);
    model_seeds();
    token_seeds();
    mil_seeds();
    metrics_seeds();
    examples_seeds();
    path_remove_tree(scratch);
    printf("make_seeds: %d seeds in %s\n", seeds_written, root);
    return 0;
}
