/* Test harness for model.c (tinycnn export --format c). Build: cc -std=c99 -O2 model.c model_main.c
 *   ./a.out                  runs the golden vectors of model_golden.h, exit 0 when all are bit-exact
 *   ./a.out IMAGES LOGITS    reads raw uint8 images (MODEL_PIXELS bytes each), writes int8 logits */
#include <stdio.h>
#include <string.h>
#include "model.h"
#include "model_golden.h"

static uint8_t pixels[1][MODEL_CHANNELS][MODEL_HEIGHT][MODEL_WIDTH];
static int8_t logits[1][MODEL_CLASSES];

static int run_golden(void) {
    int exact = 0;
    for (int i = 0; i < MODEL_GOLDEN_COUNT; ++i) {
        memcpy(pixels, model_golden_pixels[i], sizeof pixels);
        model(pixels, logits);
        if (memcmp(logits, model_golden_logits[i], sizeof logits) == 0) {
            ++exact;
        } else {
            printf("golden image %d differs\n", i);
        }
    }
    printf("golden: %d/%d bit-exact\n", exact, MODEL_GOLDEN_COUNT);
    return exact == MODEL_GOLDEN_COUNT ? 0 : 1;
}

static int run_files(const char *in_path, const char *out_path) {
    FILE *in = fopen(in_path, "rb");
    FILE *out = fopen(out_path, "wb");
    long count = 0;
    if (in == NULL || out == NULL) {
        fprintf(stderr, "cannot open %s or %s\n", in_path, out_path);
        return 2;
    }
    while (fread(pixels, 1, sizeof pixels, in) == sizeof pixels) {
        model(pixels, logits);
        if (fwrite(logits, 1, sizeof logits, out) != sizeof logits) {
            fprintf(stderr, "cannot write %s\n", out_path);
            return 2;
        }
        ++count;
    }
    fclose(in);
    if (fclose(out) != 0) {
        return 2;
    }
    printf("%ld images\n", count);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 1) {
        return run_golden();
    }
    if (argc == 3) {
        return run_files(argv[1], argv[2]);
    }
    fprintf(stderr, "usage: %s [IMAGES LOGITS]\n", argv[0]);
    return 2;
}
