//! Misusing the model macros is a compile error with a message that says what to do.

#[test]
fn model_misuse_fails_to_compile_with_a_clear_message() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
