#pragma once
// Checkpoints: a model's weights, or a whole training state, as one safetensors file
// (diffuse/io/safetensors.hpp) named the way PyTorch names things, so that
//     model.load_state_dict(safetensors.torch.load_file(path), strict=False)
// loads a diffuse U-Net's weights into a PyTorch port of the same network.
//
// A training state (save_checkpoint / load_checkpoint) holds, for every parameter <name> the model's
// for_each_parameter yields (e.g. down.0.block.1.conv1.weight):
//     <name>                          the weights                          F32 (F64 for a double model)
//     ema.<name>                      the EMA's average                    once the EMA has been updated
//     optimizer.exp_avg.<name>        Adam's first moment m                once Adam has stepped
//     optimizer.exp_avg_sq.<name>     Adam's second moment v
// and the counters, each an I64 scalar (shape []):
//     trainer.step                    steps taken
//     optimizer.step                  Adam's t
//     ema.num_updates                 the EMA's update count (its warm-up depends on it)
//     generator.seed, generator.offset   the trainer's Philox generator, (seed, offset); both are
//                                     unsigned 64-bit numbers stored in I64 with the same bits
// and, when the trainer draws t with the loss-aware sampler (optim/timestep_sampler.hpp),
//     trainer.timestep_loss_history   [T, 10] F64, each t's last losses, oldest first
//     trainer.timestep_loss_counts    [T] I64, how many of each row are filled
// With the weights these are all a training step reads that changes from step to step, so a run
// resumed from a checkpoint is bit-identical to one that never stopped (given the same data, options
// and schedule, and diffuse's thread-count-independent arithmetic).
//
// A weights file (save_weights / load_weights) holds only <name> tensors: the model's weights or the
// EMA's average in their place, which is what a sampling program wants.
//
// Both carry "__metadata__" strings:
//     format                          "pt" (what Hugging Face tools expect of PyTorch weights)
//     diffuse.checkpoint              "training_state" or "weights"
//     diffuse.checkpoint_version      "1", this layout
//     diffuse.version                 the diffuse that wrote it
//     diffuse.unet_config             the UNetConfig as JSON, so config_from_checkpoint can rebuild
//                                     the model from the file alone (U-Net models)
//     diffuse.text_encoder_config     a PromptUNet's TextEncoderConfig as JSON (beside its diffuse.unet_config),
//                                     for text_encoder_config_from_checkpoint; its files are refused for a
//                                     UNet and a U-Net's for a PromptUNet
//     diffuse.tokenizer               a prompt model's vocabulary and max_length, when given (tokenizer_metadata,
//                                     tokenizer_from_checkpoint)
//     diffuse.autoencoder_config      the AutoencoderConfig as JSON (autoencoders), for
//                                     autoencoder_config_from_checkpoint
//     diffuse.latent_scale_factor     latent diffusion's scale factor, when given (latent_scale_factor_metadata)
//     diffuse.latent                  a latent diffusion U-Net's autoencoder: its weights file, configuration and
//                                     scale factor as JSON (latent_metadata, latent_reference_from_checkpoint)
//     diffuse.trainer_options         the TrainerOptions as JSON (a diffusion trainer's states)
//     diffuse.autoencoder_trainer_options   the AutoencoderTrainerOptions as JSON (an autoencoder
//                                     trainer's states, which have no schedule)
//     diffuse.schedule                the noise schedule as JSON, {"name": ..., "betas": [...]}: always in
//                                     a training state (the trainer's), in a weights file when given
//                                     (schedule_metadata); schedule_from_checkpoint reads it back
//     diffuse.weights                 "model" or "ema": which weights a weights file holds
//
// Loading checks every tensor the model (and optimizer, EMA) expects: present, the same dtype, the
// same shape; and that the file has no tensor nobody expects. It lists what does not match, e.g.
//     down.0.block.1.conv1.weight: shape [32, 32, 3, 3] in file, [64, 32, 3, 3] expected
// and changes nothing unless everything matches. Writing is atomic (see save_safetensors).

#include "diffuse/core/error.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/io/safetensors.hpp"
#include "diffuse/models/autoencoder.hpp"
#include "diffuse/models/prompt_unet.hpp"
#include "diffuse/models/text_encoder.hpp"
#include "diffuse/models/unet.hpp"
#include "diffuse/nn/parameter.hpp"
#include "diffuse/optim/adam.hpp"
#include "diffuse/optim/autoencoder_trainer.hpp"
#include "diffuse/optim/ema.hpp"
#include "diffuse/optim/trainer.hpp"
#include "diffuse/process/parameterization.hpp"
#include "diffuse/schedule/betas.hpp"
#include "diffuse/schedule/noise_schedule.hpp"
#include "diffuse/version.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace diffuse {

/// Which weights load_weights takes from a training checkpoint: the trained ones or their average.
enum class Weights { model, ema };

namespace detail {

inline constexpr const char* checkpoint_version = "1";
inline constexpr const char* training_state_kind = "training_state";
inline constexpr const char* weights_kind = "weights";
// The sections of a training state besides the model's own tensors.
inline constexpr const char* state_sections[] = {"ema.", "optimizer.", "trainer.", "generator."};

[[noreturn]] inline void throw_checkpoint(const char* where, const std::string& path, const std::string& what) {
    throw invalid_argument(std::string(where) + ": \"" + path + "\": " + what);
}

inline bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

inline std::int64_t u64_as_i64(std::uint64_t v) {
    std::int64_t out;
    std::memcpy(&out, &v, sizeof out);
    return out;
}

inline std::uint64_t i64_as_u64(std::int64_t v) {
    std::uint64_t out;
    std::memcpy(&out, &v, sizeof out);
    return out;
}

// ---- JSON of the configuration -------------------------------------------------------------------

/// Reads the JSON object `text` (metadata entry `key`), checking it has every one of `keys`, and
/// nothing but those and `optional` (keys added in a later version, which older files lack).
inline nlohmann::json config_object(const char* where, const std::string& path, const std::string& key,
                                    const std::string& text, const std::vector<std::string>& keys,
                                    const std::vector<std::string>& optional = {}) {
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
        throw_checkpoint(where, path, "metadata " + key + " is not valid JSON: " + e.what());
    }
    if (!j.is_object()) throw_checkpoint(where, path, "metadata " + key + " is not a JSON object: " + text);
    for (const auto& [name, value] : j.items()) {
        (void)value;
        if (std::find(keys.begin(), keys.end(), name) == keys.end() &&
            std::find(optional.begin(), optional.end(), name) == optional.end()) {
            throw_checkpoint(where, path, "metadata " + key + " has an unknown key \"" + name + "\"");
        }
    }
    for (const std::string& name : keys) {
        if (!j.contains(name)) throw_checkpoint(where, path, "metadata " + key + " has no \"" + name + "\"");
    }
    return j;
}

template <class Value>
Value config_value(const char* where, const std::string& path, const std::string& key, const nlohmann::json& j,
                   const char* name) {
    const nlohmann::json& v = j.at(name);
    bool ok;
    if constexpr (std::is_same_v<Value, bool>) {
        ok = v.is_boolean();
    } else if constexpr (std::is_floating_point_v<Value>) {
        ok = v.is_number();
    } else if constexpr (std::is_unsigned_v<Value>) {
        ok = v.is_number_unsigned();
    } else {
        ok = v.is_number_integer();
    }
    if (!ok) throw_checkpoint(where, path, "metadata " + key + ": \"" + name + "\" = " + v.dump() + " has the wrong type");
    return v.get<Value>();
}

inline std::vector<Index> config_sizes(const char* where, const std::string& path, const std::string& key,
                                       const nlohmann::json& j, const char* name) {
    const nlohmann::json& v = j.at(name);
    std::vector<Index> out;
    if (v.is_array()) {
        for (const nlohmann::json& e : v) {
            if (!e.is_number_integer()) break;
            out.push_back(e.get<Index>());
        }
    }
    if (!v.is_array() || out.size() != v.size()) {
        throw_checkpoint(where, path, "metadata " + key + ": \"" + name + "\" = " + v.dump() +
                                          ", expected an array of integers");
    }
    return out;
}

}  // namespace detail

/// An autoencoder's configuration as the JSON object a checkpoint stores (diffuse.autoencoder_config).
inline std::string autoencoder_config_to_json(const AutoencoderConfig& c) {
    nlohmann::ordered_json j;
    j["in_channels"] = c.in_channels;
    j["ch"] = c.ch;
    j["ch_mult"] = c.ch_mult;
    j["num_res_blocks"] = c.num_res_blocks;
    j["z_channels"] = c.z_channels;
    j["groups"] = c.groups;
    j["image_size"] = c.image_size;
    return j.dump();
}

/// The configuration from autoencoder_config_to_json's JSON; every field must be there, and nothing else.
inline AutoencoderConfig autoencoder_config_from_json(const std::string& text, const std::string& path = "") {
    constexpr const char* where = "diffuse::autoencoder_config_from_json";
    const std::string key = "diffuse.autoencoder_config";
    const nlohmann::json j = detail::config_object(
        where, path, key, text, {"in_channels", "ch", "ch_mult", "num_res_blocks", "z_channels", "groups", "image_size"});
    AutoencoderConfig c;
    c.in_channels = detail::config_value<Index>(where, path, key, j, "in_channels");
    c.ch = detail::config_value<Index>(where, path, key, j, "ch");
    c.ch_mult = detail::config_sizes(where, path, key, j, "ch_mult");
    c.num_res_blocks = detail::config_value<Index>(where, path, key, j, "num_res_blocks");
    c.z_channels = detail::config_value<Index>(where, path, key, j, "z_channels");
    c.groups = detail::config_value<Index>(where, path, key, j, "groups");
    c.image_size = detail::config_value<Index>(where, path, key, j, "image_size");
    return c;
}

/// The configuration as the JSON object a checkpoint stores.
inline std::string unet_config_to_json(const UNetConfig& c) {
    nlohmann::ordered_json j;
    j["in_channels"] = c.in_channels;
    j["out_channels"] = c.out_channels;
    j["model_channels"] = c.model_channels;
    j["channel_mult"] = c.channel_mult;
    j["num_res_blocks"] = c.num_res_blocks;
    j["attention_resolutions"] = c.attention_resolutions;
    j["dropout"] = c.dropout;
    j["groups"] = c.groups;
    j["heads"] = c.heads;
    j["num_classes"] = c.num_classes;
    j["image_size"] = c.image_size;
    j["context_dim"] = c.context_dim;
    j["concat_channels"] = c.concat_channels;
    j["context_pooling"] = c.context_pooling;
    return j.dump();
}

/// The configuration from unet_config_to_json's JSON; every field must be there, and nothing else,
/// but context_dim, concat_channels and context_pooling, which files written before they existed
/// lack (0 and false then).
/// `path` names the file in error messages.
inline UNetConfig unet_config_from_json(const std::string& text, const std::string& path = "") {
    constexpr const char* where = "diffuse::unet_config_from_json";
    const std::string key = "diffuse.unet_config";
    const nlohmann::json j = detail::config_object(
        where, path, key, text,
        {"in_channels", "out_channels", "model_channels", "channel_mult", "num_res_blocks", "attention_resolutions",
         "dropout", "groups", "heads", "num_classes", "image_size"},
        {"context_dim", "concat_channels", "context_pooling"});
    UNetConfig c;
    c.in_channels = detail::config_value<Index>(where, path, key, j, "in_channels");
    c.out_channels = detail::config_value<Index>(where, path, key, j, "out_channels");
    c.model_channels = detail::config_value<Index>(where, path, key, j, "model_channels");
    c.channel_mult = detail::config_sizes(where, path, key, j, "channel_mult");
    c.num_res_blocks = detail::config_value<Index>(where, path, key, j, "num_res_blocks");
    c.attention_resolutions = detail::config_sizes(where, path, key, j, "attention_resolutions");
    c.dropout = detail::config_value<double>(where, path, key, j, "dropout");
    c.groups = detail::config_value<Index>(where, path, key, j, "groups");
    c.heads = detail::config_value<Index>(where, path, key, j, "heads");
    c.num_classes = detail::config_value<Index>(where, path, key, j, "num_classes");
    c.image_size = detail::config_value<Index>(where, path, key, j, "image_size");
    if (j.contains("context_dim")) c.context_dim = detail::config_value<Index>(where, path, key, j, "context_dim");
    if (j.contains("concat_channels")) c.concat_channels = detail::config_value<Index>(where, path, key, j, "concat_channels");
    if (j.contains("context_pooling")) c.context_pooling = detail::config_value<bool>(where, path, key, j, "context_pooling");
    return c;
}

/// A text encoder's configuration as the JSON object a checkpoint stores (diffuse.text_encoder_config).
inline std::string text_encoder_config_to_json(const TextEncoderConfig& c) {
    nlohmann::ordered_json j;
    j["vocabulary_size"] = c.vocabulary_size;
    j["max_length"] = c.max_length;
    j["width"] = c.width;
    j["layers"] = c.layers;
    j["heads"] = c.heads;
    return j.dump();
}

/// The configuration from text_encoder_config_to_json's JSON; every field must be there, and nothing else.
inline TextEncoderConfig text_encoder_config_from_json(const std::string& text, const std::string& path = "") {
    constexpr const char* where = "diffuse::text_encoder_config_from_json";
    const std::string key = "diffuse.text_encoder_config";
    const nlohmann::json j =
        detail::config_object(where, path, key, text, {"vocabulary_size", "max_length", "width", "layers", "heads"});
    TextEncoderConfig c;
    c.vocabulary_size = detail::config_value<Index>(where, path, key, j, "vocabulary_size");
    c.max_length = detail::config_value<Index>(where, path, key, j, "max_length");
    c.width = detail::config_value<Index>(where, path, key, j, "width");
    c.layers = detail::config_value<Index>(where, path, key, j, "layers");
    c.heads = detail::config_value<Index>(where, path, key, j, "heads");
    return c;
}

namespace detail {

inline nlohmann::ordered_json adam_options_to_json(const optim::AdamOptions& a) {
    nlohmann::ordered_json j;
    j["lr"] = a.lr;
    j["beta1"] = a.beta1;
    j["beta2"] = a.beta2;
    j["eps"] = a.eps;
    j["weight_decay"] = a.weight_decay;
    return j;
}

inline optim::AdamOptions adam_options_from_json(const char* where, const std::string& path, const std::string& key,
                                                 const nlohmann::json& j) {
    const nlohmann::json adam =
        config_object(where, path, key + ".adam", j.at("adam").dump(), {"lr", "beta1", "beta2", "eps", "weight_decay"});
    optim::AdamOptions a;
    a.lr = config_value<double>(where, path, key, adam, "lr");
    a.beta1 = config_value<double>(where, path, key, adam, "beta1");
    a.beta2 = config_value<double>(where, path, key, adam, "beta2");
    a.eps = config_value<double>(where, path, key, adam, "eps");
    a.weight_decay = config_value<double>(where, path, key, adam, "weight_decay");
    return a;
}

/// The fields both trainers' options have: Adam, the warm-up, clipping and the EMA.
template <class Options>
void add_common_trainer_options(nlohmann::ordered_json& j, const Options& o) {
    j["adam"] = adam_options_to_json(o.adam);
    j["warmup_steps"] = o.warmup_steps;
    j["max_grad_norm"] = o.max_grad_norm;
    j["ema_decay"] = o.ema_decay;
    j["ema_warmup"] = o.ema_warmup;
}

template <class Options>
void read_common_trainer_options(const char* where, const std::string& path, const std::string& key,
                                 const nlohmann::json& j, Options& o) {
    o.adam = adam_options_from_json(where, path, key, j);
    o.warmup_steps = config_value<long>(where, path, key, j, "warmup_steps");
    o.max_grad_norm = config_value<double>(where, path, key, j, "max_grad_norm");
    o.ema_decay = config_value<double>(where, path, key, j, "ema_decay");
    o.ema_warmup = config_value<bool>(where, path, key, j, "ema_warmup");
}

}  // namespace detail

/// The trainer's options as the JSON object a checkpoint stores.
inline std::string trainer_options_to_json(const optim::TrainerOptions& o) {
    nlohmann::ordered_json j;
    detail::add_common_trainer_options(j, o);
    j["prediction"] = to_string(o.prediction);
    j["min_snr_gamma"] = o.min_snr_gamma;
    j["label_dropout"] = o.label_dropout;
    j["seed"] = o.seed;
    j["loss"] = to_string(o.loss);
    j["variance"] = to_string(o.variance);
    j["vlb_lambda"] = o.vlb_lambda;
    j["timestep_sampling"] = optim::to_string(o.timestep_sampling);
    if (o.lr_decay_steps != 0) {  // a constant rate is written as before, so older programs read the file
        j["lr_decay_steps"] = o.lr_decay_steps;
        j["final_lr"] = o.final_lr;
    }
    return j.dump();
}

/// The options from trainer_options_to_json's JSON; every field must be there, and nothing else,
/// except that a file written before Improved DDPM's objectives (no "loss", "variance", "vlb_lambda",
/// "timestep_sampling") reads as the simple loss, a fixed small variance and uniform timesteps, and one
/// written before the cosine learning-rate decay (no "lr_decay_steps", "final_lr") as a constant rate.
inline optim::TrainerOptions trainer_options_from_json(const std::string& text, const std::string& path = "") {
    constexpr const char* where = "diffuse::trainer_options_from_json";
    const std::string key = "diffuse.trainer_options";
    const nlohmann::json j = detail::config_object(
        where, path, key, text,
        {"adam", "warmup_steps", "max_grad_norm", "ema_decay", "ema_warmup", "prediction", "min_snr_gamma",
         "label_dropout", "seed"},
        {"loss", "variance", "vlb_lambda", "timestep_sampling", "lr_decay_steps", "final_lr"});
    optim::TrainerOptions o;
    detail::read_common_trainer_options(where, path, key, j, o);
    if (!j.at("prediction").is_string()) {
        detail::throw_checkpoint(where, path, "metadata " + key + ": \"prediction\" is not a string");
    }
    o.prediction = prediction_from_string(j.at("prediction").get<std::string>());
    o.min_snr_gamma = detail::config_value<double>(where, path, key, j, "min_snr_gamma");
    o.label_dropout = detail::config_value<double>(where, path, key, j, "label_dropout");
    o.seed = detail::config_value<std::uint64_t>(where, path, key, j, "seed");
    const auto text_of = [&](const char* name) {
        if (!j.at(name).is_string()) detail::throw_checkpoint(where, path, "metadata " + key + ": \"" + name + "\" is not a string");
        return j.at(name).get<std::string>();
    };
    if (j.contains("loss")) o.loss = loss_from_string(text_of("loss"));
    if (j.contains("variance")) o.variance = model_variance_from_string(text_of("variance"));
    if (j.contains("vlb_lambda")) o.vlb_lambda = detail::config_value<double>(where, path, key, j, "vlb_lambda");
    if (j.contains("timestep_sampling")) {
        o.timestep_sampling = optim::timestep_sampling_from_string(text_of("timestep_sampling"));
    }
    if (j.contains("lr_decay_steps")) o.lr_decay_steps = detail::config_value<long>(where, path, key, j, "lr_decay_steps");
    if (j.contains("final_lr")) o.final_lr = detail::config_value<double>(where, path, key, j, "final_lr");
    return o;
}

/// The autoencoder trainer's options as the JSON object its checkpoint stores.
inline std::string autoencoder_trainer_options_to_json(const optim::AutoencoderTrainerOptions& o) {
    nlohmann::ordered_json j;
    detail::add_common_trainer_options(j, o);
    j["reconstruction"] = o.reconstruction == optim::Reconstruction::l1 ? "l1" : "mse";
    j["kl_weight"] = o.kl_weight;
    j["seed"] = o.seed;
    return j.dump();
}

/// The options from autoencoder_trainer_options_to_json's JSON; every field must be there, and nothing else.
inline optim::AutoencoderTrainerOptions autoencoder_trainer_options_from_json(const std::string& text,
                                                                              const std::string& path = "") {
    constexpr const char* where = "diffuse::autoencoder_trainer_options_from_json";
    const std::string key = "diffuse.autoencoder_trainer_options";
    const nlohmann::json j = detail::config_object(
        where, path, key, text,
        {"adam", "warmup_steps", "max_grad_norm", "ema_decay", "ema_warmup", "reconstruction", "kl_weight", "seed"});
    optim::AutoencoderTrainerOptions o;
    detail::read_common_trainer_options(where, path, key, j, o);
    const nlohmann::json& rec = j.at("reconstruction");
    if (!rec.is_string() || (rec.get<std::string>() != "l1" && rec.get<std::string>() != "mse")) {
        detail::throw_checkpoint(where, path, "metadata " + key + ": \"reconstruction\" = " + rec.dump() +
                                                  ", expected \"l1\" or \"mse\"");
    }
    o.reconstruction = rec.get<std::string>() == "l1" ? optim::Reconstruction::l1 : optim::Reconstruction::mse;
    o.kl_weight = detail::config_value<double>(where, path, key, j, "kl_weight");
    o.seed = detail::config_value<std::uint64_t>(where, path, key, j, "seed");
    return o;
}

namespace detail {

/// Metadata entry `key` of a file's header, or an error saying the file was not written by diffuse.
inline std::string metadata_entry(const char* where, const std::string& path,
                                  const std::map<std::string, std::string>& metadata, const std::string& key) {
    const auto it = metadata.find(key);
    if (it == metadata.end()) {
        throw_checkpoint(where, path, "no \"" + key + "\" in the file's __metadata__; it was not written by "
                                      "diffuse's save_checkpoint or save_weights");
    }
    return it->second;
}

template <class Module>
struct is_prompt_model : std::false_type {};
template <class T>
struct is_prompt_model<PromptUNet<T>> : std::true_type {};

/// Model-specific metadata: a U-Net's or an autoencoder's configuration; other modules have none.
template <class Module>
void add_model_metadata(const Module&, std::map<std::string, std::string>&) {}

template <class T>
void add_model_metadata(const UNet<T>& model, std::map<std::string, std::string>& metadata) {
    metadata["diffuse.unet_config"] = unet_config_to_json(model.config());
}
template <class T>
void add_model_metadata(const Autoencoder<T>& model, std::map<std::string, std::string>& metadata) {
    metadata["diffuse.autoencoder_config"] = autoencoder_config_to_json(model.config());
}
template <class T>
void add_model_metadata(const PromptUNet<T>& model, std::map<std::string, std::string>& metadata) {
    metadata["diffuse.unet_config"] = unet_config_to_json(model.config());
    metadata["diffuse.text_encoder_config"] = text_encoder_config_to_json(model.text_config());
}

/// A prompt model's file (it has diffuse.text_encoder_config) is refused where a U-Net's is expected,
/// and the reverse, before any tensor is compared.
template <class Module>
void check_prompt_model(const char* where, const std::string& path, const std::map<std::string, std::string>& metadata) {
    const bool file_has_prompts = metadata.count("diffuse.text_encoder_config") != 0;
    constexpr bool model_has_prompts = is_prompt_model<Module>::value;
    if (file_has_prompts && !model_has_prompts) {
        throw_checkpoint(where, path, "the file is a prompt-conditioned model's (diffuse.text_encoder_config): load it "
                                      "into a PromptUNet (text_encoder_config_from_checkpoint, config_from_checkpoint)");
    }
    if (!file_has_prompts && model_has_prompts && metadata.count("diffuse.unet_config") != 0) {
        throw_checkpoint(where, path, "the file is a U-Net's without a text encoder (no diffuse.text_encoder_config), "
                                      "not a PromptUNet's");
    }
}

/// A parameter as a checkpoint sees it: name, shape and where its values live.
template <class T>
struct ParameterSlot {
    std::string name;
    std::vector<Index> shape;
    T* value;  // [size]
    Index size;
};

template <class T, class Module>
std::vector<ParameterSlot<T>> parameter_slots(Module& module) {
    std::vector<ParameterSlot<T>> out;
    module.for_each_parameter("", [&out](nn::ParameterView<T> p) { out.push_back({p.name, p.shape, p.value, p.size}); });
    return out;
}

inline std::map<std::string, std::string> base_metadata(const char* kind) {
    return {{"format", "pt"},
            {"diffuse.checkpoint", kind},
            {"diffuse.checkpoint_version", checkpoint_version},
            {"diffuse.version", DIFFUSE_VERSION_STRING}};
}

/// A tensor a load expects in the file.
struct Expected {
    std::string name;
    Dtype dtype;
    std::vector<Index> shape;
};

/// Checks that `file` has every expected tensor with its dtype and shape, and that every tensor of
/// the file for which `counts(name)` holds is expected; throws listing every mismatch.
template <class Counts>
void check_tensors(const char* where, const std::string& path, const SafeTensors& file,
                   const std::vector<Expected>& expected, Counts&& counts, const char* what) {
    // Wrong dtypes and shapes first, then missing tensors, then extra ones: the first lines are
    // the most telling when a whole block is missing or extra.
    std::vector<std::string> problems, missing;
    std::set<std::string> names;
    for (const Expected& e : expected) {
        names.insert(e.name);
        if (!file.contains(e.name)) {
            missing.push_back(e.name + ": missing from the file");
            continue;
        }
        const StoredTensor& t = file.at(e.name);
        if (t.dtype != e.dtype) {
            problems.push_back(e.name + ": dtype " + dtype_name(t.dtype) + " in file, " + dtype_name(e.dtype) +
                               " expected");
        } else if (t.shape != e.shape) {
            problems.push_back(e.name + ": shape " + shape_string(t.shape) + " in file, " + shape_string(e.shape) +
                               " expected");
        }
    }
    problems.insert(problems.end(), missing.begin(), missing.end());
    for (const auto& [name, tensor] : file.tensors()) {
        (void)tensor;
        if (counts(name) && names.count(name) == 0) problems.push_back(name + ": in the file but not in the model");
    }
    if (problems.empty()) return;
    std::string message = std::to_string(problems.size()) + (problems.size() == 1 ? " tensor does" : " tensors do") +
                          " not match the " + what + ":";
    constexpr std::size_t shown = 12;
    for (std::size_t i = 0; i < problems.size() && i < shown; ++i) message += "\n  " + problems[i];
    if (problems.size() > shown) message += "\n  and " + std::to_string(problems.size() - shown) + " more";
    throw_checkpoint(where, path, message);
}

}  // namespace detail

/// The U-Net configuration a checkpoint (training state or weights) was saved with; reads only the
/// file's header. With it a sampling program builds the model from the file alone:
///     UNet<float> model(config_from_checkpoint(path));  load_weights(path, model);
inline UNetConfig config_from_checkpoint(const std::string& path) {
    constexpr const char* where = "diffuse::config_from_checkpoint";
    const SafetensorsHeader header = read_safetensors_header(path);
    return unet_config_from_json(detail::metadata_entry(where, path, header.metadata, "diffuse.unet_config"), path);
}

/// The text encoder's configuration of a prompt model's checkpoint (PromptUNet); reads only the
/// file's header. With config_from_checkpoint and tokenizer_from_checkpoint it rebuilds the model:
///     PromptUNet<float> model(text_encoder_config_from_checkpoint(path), config_from_checkpoint(path));
inline TextEncoderConfig text_encoder_config_from_checkpoint(const std::string& path) {
    constexpr const char* where = "diffuse::text_encoder_config_from_checkpoint";
    const SafetensorsHeader header = read_safetensors_header(path);
    if (header.metadata.count("diffuse.text_encoder_config") == 0) {
        detail::throw_checkpoint(where, path, "no diffuse.text_encoder_config: the file is not a prompt-conditioned "
                                              "model's (PromptUNet)");
    }
    return text_encoder_config_from_json(header.metadata.at("diffuse.text_encoder_config"), path);
}

/// The metadata entry that stores a tokenizer's vocabulary and length (pass it to save_checkpoint or
/// save_weights with a PromptUNet), so that a sampling program reads prompts as the model was taught.
inline std::map<std::string, std::string> tokenizer_metadata(const Tokenizer& tokenizer) {
    nlohmann::ordered_json j;
    j["words"] = tokenizer.words();
    j["max_length"] = tokenizer.max_length();
    return {{"diffuse.tokenizer", j.dump()}};
}

/// The tokenizer tokenizer_metadata stored; reads only the file's header. Refuses a vocabulary whose
/// size does not match the file's text encoder.
inline Tokenizer tokenizer_from_checkpoint(const std::string& path) {
    constexpr const char* where = "diffuse::tokenizer_from_checkpoint";
    const SafetensorsHeader header = read_safetensors_header(path);
    const std::string key = "diffuse.tokenizer";
    const nlohmann::json j =
        detail::config_object(where, path, key, detail::metadata_entry(where, path, header.metadata, key), {"words", "max_length"});
    std::vector<std::string> words;
    for (const nlohmann::json& w : j.at("words")) {
        if (!w.is_string()) detail::throw_checkpoint(where, path, "metadata " + key + ": a word " + w.dump() + " is not a string");
        words.push_back(w.get<std::string>());
    }
    Tokenizer tokenizer;
    try {
        tokenizer = Tokenizer(std::move(words), detail::config_value<Index>(where, path, key, j, "max_length"));
    } catch (const std::invalid_argument& e) {
        detail::throw_checkpoint(where, path, std::string("metadata ") + key + ": " + e.what());
    }
    const auto text = header.metadata.find("diffuse.text_encoder_config");
    if (text != header.metadata.end()) {
        const TextEncoderConfig c = text_encoder_config_from_json(text->second, path);
        if (c.vocabulary_size != tokenizer.vocabulary_size() || c.max_length != tokenizer.max_length()) {
            detail::throw_checkpoint(where, path, "the tokenizer (" + std::to_string(tokenizer.vocabulary_size()) + " tokens, " +
                                                      std::to_string(tokenizer.max_length()) + " long) does not match the text "
                                                      "encoder (" + std::to_string(c.vocabulary_size) + " tokens, " +
                                                      std::to_string(c.max_length) + " long)");
        }
    }
    return tokenizer;
}

/// The trainer options a training checkpoint was saved with (for a --resume that takes them from
/// the file); reads only the file's header.
inline optim::TrainerOptions trainer_options_from_checkpoint(const std::string& path) {
    constexpr const char* where = "diffuse::trainer_options_from_checkpoint";
    const SafetensorsHeader header = read_safetensors_header(path);
    return trainer_options_from_json(detail::metadata_entry(where, path, header.metadata, "diffuse.trainer_options"),
                                     path);
}

/// The options an autoencoder's training checkpoint was saved with; reads only the file's header.
inline optim::AutoencoderTrainerOptions autoencoder_trainer_options_from_checkpoint(const std::string& path) {
    constexpr const char* where = "diffuse::autoencoder_trainer_options_from_checkpoint";
    const SafetensorsHeader header = read_safetensors_header(path);
    return autoencoder_trainer_options_from_json(
        detail::metadata_entry(where, path, header.metadata, "diffuse.autoencoder_trainer_options"), path);
}

/// The autoencoder configuration a weights file was saved with; reads only the file's header. A
/// file of another model (a U-Net's) has none, and this says so.
inline AutoencoderConfig autoencoder_config_from_checkpoint(const std::string& path) {
    constexpr const char* where = "diffuse::autoencoder_config_from_checkpoint";
    const SafetensorsHeader header = read_safetensors_header(path);
    return autoencoder_config_from_json(detail::metadata_entry(where, path, header.metadata, "diffuse.autoencoder_config"),
                                        path);
}

/// The metadata entry that stores latent diffusion's scale factor with an autoencoder's weights.
inline std::map<std::string, std::string> latent_scale_factor_metadata(double factor) {
    if (!std::isfinite(factor) || !(factor > 0.0)) {
        detail::throw_invalid("diffuse::latent_scale_factor_metadata", "factor", factor, "a finite number > 0");
    }
    nlohmann::json j = factor;
    return {{"diffuse.latent_scale_factor", j.dump()}};
}

/// The scale factor stored by latent_scale_factor_metadata; refuses one that is not finite and positive.
inline double latent_scale_factor_from_checkpoint(const std::string& path) {
    constexpr const char* where = "diffuse::latent_scale_factor_from_checkpoint";
    const SafetensorsHeader header = read_safetensors_header(path);
    const std::string text = detail::metadata_entry(where, path, header.metadata, "diffuse.latent_scale_factor");
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error&) {
        detail::throw_checkpoint(where, path, "diffuse.latent_scale_factor = " + text + " is not a number");
    }
    if (!j.is_number() || !std::isfinite(j.get<double>()) || !(j.get<double>() > 0.0)) {
        detail::throw_checkpoint(where, path, "diffuse.latent_scale_factor = " + text + ", expected a finite number > 0");
    }
    return j.get<double>();
}

/// What a latent diffusion model's checkpoint says of the autoencoder whose latents it was trained
/// on (metadata diffuse.latent): the path of its weights file as it was given, its configuration and
/// its scale factor, so that a sampling program finds the decoder and can tell it is the right one;
/// and the range of its training latents, which the samplers clip x0 predictions to.
struct LatentReference {
    std::string autoencoder;        // the weights file's path
    AutoencoderConfig config;
    double scale_factor = 1.0;
    double clip_range = 1.0;        // r: x0 predictions clipped to [-r, r] (Thresholding::clip)
};

/// The metadata entry diffuse.latent of a U-Net trained on the latents of the autoencoder in `path`.
inline std::map<std::string, std::string> latent_metadata(const LatentReference& reference) {
    if (!std::isfinite(reference.scale_factor) || !(reference.scale_factor > 0.0)) {
        detail::throw_invalid("diffuse::latent_metadata", "scale_factor", reference.scale_factor, "a finite number > 0");
    }
    if (!std::isfinite(reference.clip_range) || !(reference.clip_range > 0.0)) {
        detail::throw_invalid("diffuse::latent_metadata", "clip_range", reference.clip_range, "a finite number > 0");
    }
    nlohmann::ordered_json j;
    j["autoencoder"] = reference.autoencoder;
    j["autoencoder_config"] = nlohmann::ordered_json::parse(autoencoder_config_to_json(reference.config));
    j["scale_factor"] = reference.scale_factor;
    j["clip_range"] = reference.clip_range;
    return {{"diffuse.latent", j.dump()}};
}

/// The autoencoder a checkpoint's U-Net works in the latents of, or none for a model of pixels.
inline std::optional<LatentReference> latent_reference_from_checkpoint(const std::string& path) {
    constexpr const char* where = "diffuse::latent_reference_from_checkpoint";
    const SafetensorsHeader header = read_safetensors_header(path);
    const auto it = header.metadata.find("diffuse.latent");
    if (it == header.metadata.end()) return std::nullopt;
    const std::string key = "diffuse.latent";
    const nlohmann::json j = detail::config_object(where, path, key, it->second, {"autoencoder", "autoencoder_config", "scale_factor", "clip_range"});
    LatentReference r;
    if (!j.at("autoencoder").is_string()) detail::throw_checkpoint(where, path, "metadata diffuse.latent: \"autoencoder\" is not a string");
    r.autoencoder = j.at("autoencoder").get<std::string>();
    r.config = autoencoder_config_from_json(j.at("autoencoder_config").dump(), path);
    r.scale_factor = detail::config_value<double>(where, path, key, j, "scale_factor");
    r.clip_range = detail::config_value<double>(where, path, key, j, "clip_range");
    for (const auto& [name, value] : {std::pair<const char*, double>{"scale_factor", r.scale_factor}, {"clip_range", r.clip_range}}) {
        if (!std::isfinite(value) || !(value > 0.0)) {
            detail::throw_checkpoint(where, path, std::string("metadata diffuse.latent: ") + name + " = " +
                                                      std::to_string(value) + ", expected a finite number > 0");
        }
    }
    return r;
}

/// Refuses an autoencoder weights file that is not the one `reference` names: another configuration
/// or another scale factor than the latent model was trained with.
inline void check_latent_autoencoder(const LatentReference& reference, const std::string& autoencoder_path) {
    constexpr const char* where = "diffuse::check_latent_autoencoder";
    const AutoencoderConfig config = autoencoder_config_from_checkpoint(autoencoder_path);
    if (autoencoder_config_to_json(config) != autoencoder_config_to_json(reference.config)) {
        detail::throw_checkpoint(where, autoencoder_path, "the autoencoder's configuration " + autoencoder_config_to_json(config) +
                                                              " is not the one the latent model was trained with, " +
                                                              autoencoder_config_to_json(reference.config));
    }
    const double scale = latent_scale_factor_from_checkpoint(autoencoder_path);
    if (scale != reference.scale_factor) {
        detail::throw_checkpoint(where, autoencoder_path, "the autoencoder's scale factor " + std::to_string(scale) +
                                                              " is not the one the latent model was trained with, " +
                                                              std::to_string(reference.scale_factor));
    }
}

/// A noise schedule as a checkpoint stores it: its betas, from which NoiseSchedule rebuilds every
/// table, and the name a program describes it by ("cosine"; empty for betas of one's own).
struct StoredSchedule {
    std::string name;
    Betas betas;  // [T], in double
};

namespace detail {

inline StoredSchedule schedule_from_json(const char* where, const std::string& path, const std::string& text) {
    const nlohmann::json j = config_object(where, path, "diffuse.schedule", text, {"name", "betas"});
    StoredSchedule out;
    if (!j["name"].is_string()) throw_checkpoint(where, path, "metadata diffuse.schedule: \"name\" is not a string");
    out.name = j["name"].get<std::string>();
    if (!j["betas"].is_array() || j["betas"].empty()) {
        throw_checkpoint(where, path, "metadata diffuse.schedule: \"betas\" is not a non-empty array");
    }
    for (const auto& b : j["betas"]) {
        if (!b.is_number()) throw_checkpoint(where, path, "metadata diffuse.schedule: a beta is not a number: " + b.dump());
        out.betas.push_back(b.get<double>());
    }
    return out;
}

}  // namespace detail

/// The metadata entry that stores `schedule` (pass it to save_weights; save_checkpoint writes the
/// trainer's own). The betas are written as JSON numbers that read back to the same doubles.
template <class T>
std::map<std::string, std::string> schedule_metadata(const NoiseSchedule<T>& schedule, const std::string& name = "") {
    nlohmann::json j;
    j["name"] = name;
    j["betas"] = schedule.betas_double();
    return {{"diffuse.schedule", j.dump()}};
}

/// The schedule a checkpoint was saved with; reads only the file's header. A sampling program
/// rebuilds it from the file alone: NoiseSchedule<float> schedule(schedule_from_checkpoint(path).betas).
inline StoredSchedule schedule_from_checkpoint(const std::string& path) {
    constexpr const char* where = "diffuse::schedule_from_checkpoint";
    const SafetensorsHeader header = read_safetensors_header(path);
    return detail::schedule_from_json(where, path, detail::metadata_entry(where, path, header.metadata, "diffuse.schedule"));
}

/// Saves `model`'s weights, under their own names, with `metadata` added (atomically).
template <template <class> class Module, class T>
void save_weights(const std::string& path, Module<T>& model, const std::map<std::string, std::string>& metadata = {}) {
    SafeTensors file(path);
    for (const auto& p : detail::parameter_slots<T>(model)) file.add(p.name, p.shape, p.value);
    file.metadata() = detail::base_metadata(detail::weights_kind);
    file.metadata()["diffuse.weights"] = "model";
    detail::add_model_metadata(model, file.metadata());
    for (const auto& [key, value] : metadata) file.metadata()[key] = value;
    save_safetensors(path, file);
}

/// Saves the EMA's average of `model`'s weights under the model's names (a file a sampling program
/// loads with load_weights as it would the weights themselves).
template <template <class> class Module, class T>
void save_weights(const std::string& path, Module<T>& model, const optim::EMA<T>& ema,
                  const std::map<std::string, std::string>& metadata = {}) {
    constexpr const char* where = "diffuse::save_weights";
    SafeTensors file(path);
    for (const auto& p : detail::parameter_slots<T>(model)) {
        const auto it = ema.shadow().find(p.name);
        if (it == ema.shadow().end() || it->second.size() != p.size) {
            detail::throw_checkpoint(where, path, "the EMA has no average of " + p.name + " with " +
                                                      std::to_string(p.size) + " values (has it been updated?)");
        }
        file.add(p.name, p.shape, it->second.data());
    }
    file.metadata() = detail::base_metadata(detail::weights_kind);
    file.metadata()["diffuse.weights"] = "ema";
    detail::add_model_metadata(model, file.metadata());
    for (const auto& [key, value] : metadata) file.metadata()[key] = value;
    save_safetensors(path, file);
}

/// Loads weights into `model`: from a weights file (or any safetensors file of parameters by name,
/// such as one PyTorch wrote), or from a training checkpoint, its trained weights or (Weights::ema)
/// their average. Every parameter must be in the file with the model's dtype and shape, and the file
/// must hold no other weights; if anything does not match, it throws listing what and `model` is
/// left as it was.
template <template <class> class Module, class T>
void load_weights(const std::string& path, Module<T>& model, Weights which = Weights::model) {
    constexpr const char* where = "diffuse::load_weights";
    const SafeTensors file = load_safetensors(path);
    const auto kind = file.metadata().find("diffuse.checkpoint");
    const bool training_state = kind != file.metadata().end() && kind->second == detail::training_state_kind;
    if (which == Weights::ema && !training_state) {
        detail::throw_checkpoint(where, path, "Weights::ema asks for the EMA of a training checkpoint, but this file "
                                              "holds a single set of weights; load it with Weights::model");
    }
    detail::check_prompt_model<Module<T>>(where, path, file.metadata());
    const std::string prefix = which == Weights::ema ? "ema." : "";
    const auto slots = detail::parameter_slots<T>(model);
    std::vector<detail::Expected> expected;
    for (const auto& p : slots) expected.push_back({prefix + p.name, dtype_of<T>(), p.shape});
    // Which of the file's tensors are weights of the kind asked for, and so must all be expected.
    const auto counts = [&](const std::string& name) {
        if (!training_state) return true;
        if (which == Weights::ema) return detail::starts_with(name, "ema.") && name != "ema.num_updates";
        for (const char* section : detail::state_sections) {
            if (detail::starts_with(name, section)) return false;
        }
        return true;
    };
    detail::check_tensors(where, path, file, expected, counts, "model");
    for (const auto& p : slots) file.copy_to(prefix + p.name, p.value, p.size);
}

namespace detail {

/// Refuses a file that is not a training state of this layout.
inline void check_training_state_file(const char* where, const std::string& path, const SafeTensors& file) {
    const std::string kind = metadata_entry(where, path, file.metadata(), "diffuse.checkpoint");
    if (kind != training_state_kind) {
        throw_checkpoint(where, path, "diffuse.checkpoint is \"" + kind + "\": the file holds weights only, "
                                      "not a training state; load it with load_weights");
    }
    const std::string version = metadata_entry(where, path, file.metadata(), "diffuse.checkpoint_version");
    if (version != checkpoint_version) {
        throw_checkpoint(where, path, "diffuse.checkpoint_version is \"" + version + "\", expected \"" +
                                          checkpoint_version + "\"");
    }
}

/// What every trainer's state is made of: its model, Adam, EMA, step count and generator.
template <class Model, class T>
struct TrainingState {
    Model& model;
    optim::Adam<T>& adam;
    optim::EMA<T>& ema;
    long step;
    Generator& generator;
    optim::LossAwareSampler* timestep_sampler = nullptr;  // a diffusion trainer's loss-aware sampler, if it has one
};

/// Adds the weights, the EMA's average, Adam's moments and the counters (see the top of this file).
template <class Model, class T>
void add_training_state(const char* where, const std::string& path, SafeTensors& file, const TrainingState<Model, T>& s) {
    const auto slots = parameter_slots<T>(s.model);
    for (const auto& p : slots) {
        file.add(p.name, p.shape, p.value);
        if (s.ema.updates() > 0) {
            const auto it = s.ema.shadow().find(p.name);
            if (it == s.ema.shadow().end() || it->second.size() != p.size) {
                throw_checkpoint(where, path, "the EMA has no average of " + p.name);
            }
            file.add("ema." + p.name, p.shape, it->second.data());
        }
        if (s.adam.step_count() > 0) {
            const auto it = s.adam.state().find(p.name);
            if (it == s.adam.state().end() || it->second.m.size() != p.size || it->second.v.size() != p.size) {
                throw_checkpoint(where, path, "the optimizer has no moments of " + p.name);
            }
            file.add("optimizer.exp_avg." + p.name, p.shape, it->second.m.data());
            file.add("optimizer.exp_avg_sq." + p.name, p.shape, it->second.v.data());
        }
    }
    file.add_scalar<std::int64_t>("trainer.step", s.step);
    file.add_scalar<std::int64_t>("optimizer.step", s.adam.step_count());
    file.add_scalar<std::int64_t>("ema.num_updates", s.ema.updates());
    file.add_scalar<std::int64_t>("generator.seed", u64_as_i64(s.generator.seed()));
    file.add_scalar<std::int64_t>("generator.offset", u64_as_i64(s.generator.offset()));
    if (s.timestep_sampler != nullptr) {
        const Index steps = s.timestep_sampler->num_timesteps();
        file.add("trainer.timestep_loss_history", {steps, optim::LossAwareSampler::history_per_term},
                 s.timestep_sampler->history().data());
        file.add("trainer.timestep_loss_counts", {steps}, s.timestep_sampler->counts().data());
    }
    file.metadata() = base_metadata(training_state_kind);
    add_model_metadata(s.model, file.metadata());
}

/// Restores what add_training_state stored into the model, Adam, the EMA and the generator, and
/// returns the step count. Checks every tensor first; if anything does not match, it throws listing
/// what, and nothing is changed.
template <class Model, class T>
long restore_training_state(const char* where, const std::string& path, const SafeTensors& file,
                            const TrainingState<Model, T>& s) {
    // The counters first: they say whether the EMA and the optimizer have state to restore.
    const char* const counters[] = {"trainer.step", "optimizer.step", "ema.num_updates", "generator.seed",
                                    "generator.offset"};
    std::vector<Expected> scalars;
    for (const char* name : counters) scalars.push_back({name, Dtype::I64, {}});
    check_tensors(where, path, file, scalars, [](const std::string&) { return false; }, "training state");
    const std::int64_t step = file.scalar<std::int64_t>("trainer.step");
    const std::int64_t adam_steps = file.scalar<std::int64_t>("optimizer.step");
    const std::int64_t ema_updates = file.scalar<std::int64_t>("ema.num_updates");
    for (const auto& [name, value] : {std::pair<const char*, std::int64_t>{"trainer.step", step},
                                      {"optimizer.step", adam_steps},
                                      {"ema.num_updates", ema_updates}}) {
        if (value < 0) throw_checkpoint(where, path, std::string(name) + " = " + std::to_string(value) + ", expected >= 0");
    }

    auto slots = parameter_slots<T>(s.model);
    std::vector<Expected> expected = scalars;
    for (const auto& p : slots) {
        expected.push_back({p.name, dtype_of<T>(), p.shape});
        if (ema_updates > 0) expected.push_back({"ema." + p.name, dtype_of<T>(), p.shape});
        if (adam_steps > 0) {
            expected.push_back({"optimizer.exp_avg." + p.name, dtype_of<T>(), p.shape});
            expected.push_back({"optimizer.exp_avg_sq." + p.name, dtype_of<T>(), p.shape});
        }
    }
    std::optional<optim::LossAwareSampler> sampler;  // the loss-aware sampler's state, checked before anything changes
    if (s.timestep_sampler != nullptr) {
        const Index steps = s.timestep_sampler->num_timesteps();
        expected.push_back({"trainer.timestep_loss_history", Dtype::F64, {steps, optim::LossAwareSampler::history_per_term}});
        expected.push_back({"trainer.timestep_loss_counts", Dtype::I64, {steps}});
    }
    check_tensors(where, path, file, expected, [](const std::string&) { return true; }, "model, EMA and optimizer");
    if (s.timestep_sampler != nullptr) {
        std::vector<double> history(s.timestep_sampler->history().size());
        std::vector<std::int64_t> counts(s.timestep_sampler->counts().size());
        file.copy_to("trainer.timestep_loss_history", history.data(), static_cast<Index>(history.size()));
        file.copy_to("trainer.timestep_loss_counts", counts.data(), static_cast<Index>(counts.size()));
        sampler.emplace(s.timestep_sampler->num_timesteps(), s.timestep_sampler->uniform_prob());
        try {
            sampler->set_state(history, counts);
        } catch (const invalid_argument& e) {
            throw_checkpoint(where, path, std::string("the loss-aware timestep sampler's state: ") + e.what());
        }
    }

    // Everything matches: now change things.
    std::map<std::string, Table<T>> shadow;
    std::map<std::string, typename optim::Adam<T>::State> moments;
    for (const auto& p : slots) {
        file.copy_to(p.name, p.value, p.size);
        if (ema_updates > 0) {
            Table<T>& average = shadow[p.name];
            average.resize(p.size);
            file.copy_to("ema." + p.name, average.data(), p.size);
        }
        if (adam_steps > 0) {
            auto& state = moments[p.name];
            state.m.resize(p.size);
            state.v.resize(p.size);
            file.copy_to("optimizer.exp_avg." + p.name, state.m.data(), p.size);
            file.copy_to("optimizer.exp_avg_sq." + p.name, state.v.data(), p.size);
        }
    }
    s.ema.shadow() = std::move(shadow);
    s.ema.set_updates(static_cast<long>(ema_updates));
    s.adam.state() = std::move(moments);
    s.adam.set_step_count(static_cast<long>(adam_steps));
    s.generator = Generator(i64_as_u64(file.scalar<std::int64_t>("generator.seed")),
                            i64_as_u64(file.scalar<std::int64_t>("generator.offset")));
    if (sampler) *s.timestep_sampler = std::move(*sampler);
    return static_cast<long>(step);
}

template <class Model, class T>
TrainingState<Model, T> training_state(optim::Trainer<Model, T>& trainer) {
    return {trainer.model(), trainer.optimizer(), trainer.ema(), trainer.step_count(), trainer.generator(),
            trainer.timestep_sampler()};
}

template <class T>
TrainingState<Autoencoder<T>, T> training_state(optim::AutoencoderTrainer<T>& trainer) {
    return {trainer.model(), trainer.optimizer(), trainer.ema(), trainer.step_count(), trainer.generator()};
}

}  // namespace detail

/// Saves a whole training state (see the top of this file), atomically.
template <class Model, class T>
void save_checkpoint(const std::string& path, optim::Trainer<Model, T>& trainer,
                     const std::map<std::string, std::string>& metadata = {}) {
    SafeTensors file(path);
    detail::add_training_state("diffuse::save_checkpoint", path, file, detail::training_state(trainer));
    file.metadata()["diffuse.trainer_options"] = trainer_options_to_json(trainer.options());
    for (const auto& [key, value] : schedule_metadata(trainer.schedule())) file.metadata()[key] = value;
    for (const auto& [key, value] : metadata) file.metadata()[key] = value;  // may name the schedule
    save_safetensors(path, file);
}

/// Saves an autoencoder's whole training state, atomically: as the diffusion trainer's, with the
/// AutoencoderTrainerOptions (diffuse.autoencoder_trainer_options) in place of its options and schedule.
template <class T>
void save_checkpoint(const std::string& path, optim::AutoencoderTrainer<T>& trainer,
                     const std::map<std::string, std::string>& metadata = {}) {
    SafeTensors file(path);
    detail::add_training_state("diffuse::save_checkpoint", path, file, detail::training_state(trainer));
    file.metadata()["diffuse.autoencoder_trainer_options"] = autoencoder_trainer_options_to_json(trainer.options());
    for (const auto& [key, value] : metadata) file.metadata()[key] = value;
    save_safetensors(path, file);
}

/// Restores a training state saved by save_checkpoint into `trainer` and its model: weights, EMA,
/// Adam's moments and step, the trainer's step and its generator. The next trainer.step() then does
/// exactly what it would have done in the run that saved it. Checks every tensor first; if anything
/// does not match, it throws listing what, and nothing is changed.
template <class Model, class T>
void load_checkpoint(const std::string& path, optim::Trainer<Model, T>& trainer) {
    constexpr const char* where = "diffuse::load_checkpoint";
    const SafeTensors file = load_safetensors(path);
    detail::check_training_state_file(where, path, file);
    if (file.metadata().count("diffuse.autoencoder_config") != 0) {
        detail::throw_checkpoint(where, path, "the file is an autoencoder's training state (diffuse.autoencoder_config), "
                                              "not a diffusion model's; load it into an AutoencoderTrainer");
    }
    detail::check_prompt_model<Model>(where, path, file.metadata());

    // A run resumed on another schedule would go on training a different model without a word.
    const auto stored_schedule = file.metadata().find("diffuse.schedule");
    if (stored_schedule != file.metadata().end()) {
        const Betas stored = detail::schedule_from_json(where, path, stored_schedule->second).betas;
        const Betas& own = trainer.schedule().betas_double();
        if (stored != own) {
            std::size_t i = 0;
            while (i < stored.size() && i < own.size() && stored[i] == own[i]) ++i;
            detail::throw_checkpoint(where, path, "the file was saved with another noise schedule than the trainer's: T = " +
                                                      std::to_string(stored.size()) + " in the file, " +
                                                      std::to_string(own.size()) + " in the trainer; the betas differ " +
                                                      "from t = " + std::to_string(i));
        }
    }
    trainer.set_step_count(detail::restore_training_state(where, path, file, detail::training_state(trainer)));
}

/// Restores an autoencoder's training state saved by save_checkpoint, as the diffusion trainer's.
template <class T>
void load_checkpoint(const std::string& path, optim::AutoencoderTrainer<T>& trainer) {
    constexpr const char* where = "diffuse::load_checkpoint";
    const SafeTensors file = load_safetensors(path);
    detail::check_training_state_file(where, path, file);
    if (file.metadata().count("diffuse.autoencoder_config") == 0) {
        detail::throw_checkpoint(where, path, "no diffuse.autoencoder_config: the file is not an autoencoder's training "
                                              "state (a U-Net's has diffuse.unet_config)");
    }
    trainer.set_step_count(detail::restore_training_state(where, path, file, detail::training_state(trainer)));
}

}  // namespace diffuse
