fn main() {
    for crd in capstan_crds::crds() {
        print!("---\n{}", serde_yaml_ng::to_string(&crd).unwrap());
    }
}
